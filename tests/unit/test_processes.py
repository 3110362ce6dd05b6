"""tests/support/processes.py: spawning a child never goes through the hub (see there)."""
import os

import eventlet

from tests.support import processes


def test_a_child_spawns_while_the_hub_still_lists_a_closed_fd_for_a_reader():
    # What full runs met: a greenthread's listener left on an fd number that a closed socket
    # freed; Popen's exec-error pipe then gets that number. Green os.read would trampoline on it
    # and fail with "Second simultaneous read on fileno N".
    hub = eventlet.hubs.get_hub()
    read_end, write_end = os.pipe()
    stale = hub.add(hub.READ, read_end, lambda *args: None, lambda *args: None, None)
    os.close(read_end)
    os.close(write_end)
    try:
        child = processes.Popen(["true"])  # its exec-error pipe takes the lowest free fd
        assert processes.wait(child, timeout=30) == 0
    finally:
        hub.remove(stale)


def test_run_feeds_stdin_and_returns_both_outputs():
    done = processes.run(["sh", "-c", "cat; echo err >&2; exit 3"], input="hello", timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "hello", "err\n")
