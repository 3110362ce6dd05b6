"""A nameko extension's background greenthread: run now when woken, else every few seconds.

    class MailSender(BackgroundLoop, DependencyProvider):
        def setup(self):
            self.poll_interval = 5.0

        def run_once(self):
            ...   # one pass; an exception is logged and the next pass comes as usual

        def worker_teardown(self, worker_ctx):
            self.wake()   # work to do right now

Used by the outbox relay and the notification mail sender. ``stop()`` lets the current pass
finish; ``kill()`` does not.
"""
import logging

import eventlet
from eventlet.queue import Empty, Full, LightQueue

log = logging.getLogger(__name__)


class BackgroundLoop:
    poll_interval = 2.0  # seconds between passes when nothing wakes the loop
    # seconds to wait after a wake-up before the pass: wakes meanwhile join the same pass, so a
    # burst is handled in one batch instead of one pass (and transaction) per wake
    settle_delay = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # here, not in setup(): other extensions may wake it before its own setup() ran
        self._wakeup = LightQueue(maxsize=1)
        self._running = False
        self._thread = None

    def run_once(self):
        raise NotImplementedError

    @property
    def running(self):
        return self._running

    def start(self):
        self._running = True
        self._thread = self.container.spawn_managed_thread(
            self._run, identifier=type(self).__name__)

    def stop(self):
        self._running = False
        self.wake()
        if self._thread is not None:
            self._thread.wait()

    def kill(self):
        self._running = False
        if self._thread is not None:
            self._thread.kill()

    def wake(self):
        try:
            self._wakeup.put_nowait(True)
        except Full:  # already due to run
            pass

    def _run(self):
        failures = 0
        while self._running:
            try:
                self._wakeup.get(timeout=self.poll_interval)
                if self.settle_delay and self._running:
                    eventlet.sleep(self.settle_delay)
            except Empty:
                pass
            try:
                self.run_once()
                failures = 0
            except Exception as exc:  # broker or database away: the next pass tries again
                failures += 1
                log.warning("%s of %s failed (%s: %s); next try in %.1fs", type(self).__name__,
                            self.container.service_name, type(exc).__name__, exc,
                            self.poll_interval, exc_info=failures == 1)
