"""Child processes from tests that run under eventlet (nameko's pytest plugin monkey-patches).

eventlet's green ``Popen`` reads its exec-error pipe through the hub, and fails with "Second
simultaneous read on fileno N" when that fd number is still registered in the hub by a greenthread
waiting on a socket that was closed under it (seen in full runs: F3, the replay test). So children
are spawned with the original ``subprocess`` module and the original ``os`` (the spawn blocks for
milliseconds), their output goes to files, and waiting for them is cooperative: services running
in this test process (which the child may call over RPC) keep running meanwhile.
"""
import tempfile
import time

import eventlet

subprocess = eventlet.patcher.original("subprocess")
# eventlet patches os.read & co in place (the os module itself), so even this unpatched
# subprocess module would read its exec-error pipe through the hub: give it the unpatched os.
subprocess.os = eventlet.patcher.original("os")
Popen = subprocess.Popen
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired


def wait(process, timeout):
    """``process.wait(timeout)`` without blocking this process's other greenthreads."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutExpired(process.args, timeout)
        eventlet.sleep(0.02)
    return process.returncode


def run(command, input=None, timeout=120, check=False, **kwargs):
    """Like ``subprocess.run(command, input=..., capture_output=True, text=True)``."""
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr:
        if input is not None:
            stdin.write(input.encode("utf-8"))
            stdin.seek(0)
        process = Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, **kwargs)
        try:
            wait(process, timeout)
        except TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stdout.seek(0)
        stderr.seek(0)
        completed = subprocess.CompletedProcess(
            command, process.returncode, stdout.read().decode("utf-8", "replace"),
            stderr.read().decode("utf-8", "replace"))
    if check:
        completed.check_returncode()
    return completed
