"""BackgroundLoop: woken passes, the sweep, and wakes that settle into one pass."""
import eventlet
from types import SimpleNamespace

from services.kit.background import BackgroundLoop


class Counting(BackgroundLoop):
    def __init__(self, settle_delay):
        super().__init__()
        self.settle_delay = settle_delay
        self.poll_interval = 10.0  # no sweep during the test: only wakes run it
        self.passes = 0
        self.container = SimpleNamespace(
            service_name="test",
            spawn_managed_thread=lambda fn, identifier=None: eventlet.spawn(fn))

    def run_once(self):
        self.passes += 1


def burst(loop, wakes=20, settle=0.2):
    loop.start()
    try:
        for _ in range(wakes):
            loop.wake()
            eventlet.sleep(0.001)  # the loop gets the hub between wakes
        eventlet.sleep(settle)
    finally:
        loop.kill()
    return loop.passes


def test_without_a_settle_delay_a_burst_of_wakes_makes_many_passes():
    assert burst(Counting(settle_delay=0.0)) > 5


def test_a_settle_delay_gathers_a_burst_of_wakes_into_one_or_two_passes():
    # 0.5 s: far longer than the burst takes, even on a loaded machine
    assert 1 <= burst(Counting(settle_delay=0.5), settle=0.7) <= 2
