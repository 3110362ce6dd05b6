"""``python -m bench.cpuprofile OUT -m MODULE ARGS...``: cProfile timed by the process's CPU clock.

``python -m cProfile`` times by the wall clock, which on a loaded machine charges a function (a
socket ``send`` that wakes the receiver, most of all) for the time its process waited to be
scheduled. bench/procs.py runs services this way with ``BENCH_CPROFILE=cpu``. Stats are written
at exit (``nameko run`` exits on SIGTERM).
"""
import cProfile
import runpy
import sys
import time


def main():
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__.splitlines()[0])
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
