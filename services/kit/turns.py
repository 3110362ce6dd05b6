"""Turns: at most N callers at once, the others wait, and one that would wait too long is told
so at once.

    turns = Turns(concurrency=2, max_wait=2.0)
    with turns.turn():        # Busy at once when the expected wait is over max_wait
        ...                   # at most 2 greenthreads here at a time

    caller --> expected wait (callers ahead x seconds between turns' ends) > max_wait,
               or `queue` callers waiting already? --> Busy (the gateway: 503 + Retry-After)
           --> wait for a turn, first come first served (up to `timeout`: TurnTimeout)
           --> run --> its end noted: the turn goes to the first caller waiting

Used where a slow, CPU-bound step meets bursts: auth's argon2 hashes (services/auth/passwords.py)
and the gateway's logins (gateway/http.py). Waiting callers that cannot be served within their
callers' patience only pile up work whose answers nobody reads; refusing them at once keeps the
admitted ones fast and tells the rest when to come back. The wait is estimated from how fast
turns have ended while callers waited (the drain rate), so the queue is as long as the cost
allows: cheap turns queue many, expensive ones few. Not from a turn's duration divided by
``concurrency``: N turns at once are not N times as fast when what they wait on is not (the
gateway's 4 logins at once share auth's one argon2 slot on 2 cores; that estimate admitted 4
times too many). Until a drain has been seen, turns are taken to run one at a time: too few
admitted for a moment rather than too many. Greenthreads only: nothing runs between a check and
its count.

Turns are taken in arrival order: a turn that ends is handed to the first caller waiting (held
for it until it wakes), so one who comes meanwhile queues behind. Not eventlet's Semaphore: its
``acquire(timeout=...)`` takes a released count before the waiter the release woke has run
(the wake-up is only scheduled), and a gateway connection whose client asked again at once got
its turn straight back; the logins passed over waited longer than the estimate that admitted
them (bench/burst.py, 10 clients: p50 0.75 s, p99 3.4 s).
"""
import collections
import contextlib
import time

from eventlet.event import Event

from services.kit.errors import Busy

class TurnTimeout(Exception):
    """No turn came within the caller's ``timeout``."""


class Turns:
    def __init__(self, concurrency, max_wait, queue=None,
                 busy_message="too busy; try again in a moment"):
        if concurrency < 1 or (queue is not None and queue < 0):
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue  # None: bounded by max_wait alone
        self.max_wait = max_wait  # seconds: the callers' own setting (auth's, the gateway's)
        self.busy_message = busy_message
        self.admitted = 0  # running and waiting
        self.seconds_per_turn = None  # a moving average of recent turns' durations
        self.seconds_between_ends = None  # over the last drain seen (callers waiting)
        # the ends of the current drain's last turns: ends come in bunches of up to
        # `concurrency`, so the rate is read over more than one bunch
        self._drain = collections.deque(maxlen=max(8, 2 * concurrency) + 1)
        self.free = concurrency  # turns nobody holds (none while anyone waits)
        self._waiting = collections.deque()  # one Event per caller waiting, first come first

    def expected_wait(self):
        """Seconds a caller admitted now would wait for its turn."""
        ahead = self.admitted - self.concurrency + 1
        if ahead <= 0 or self.seconds_per_turn is None:
            return 0.0
        if self.seconds_between_ends is None:
            return ahead * self.seconds_per_turn  # no drain seen yet: one at a time
        return ahead * self.seconds_between_ends

    @contextlib.contextmanager
    def turn(self, timeout=None):
        waiting = max(0, self.admitted - self.concurrency)
        if (self.queue is not None and waiting >= self.queue) or \
                self.expected_wait() > self.max_wait:
            raise Busy(self.busy_message)
        self.admitted += 1
        try:
            self._take(timeout)
            started = time.monotonic()
            try:
                yield
            finally:
                self._pass_on()
                self._note_end(started, time.monotonic())
        finally:
            self.admitted -= 1

    def _take(self, timeout):
        if self.free > 0:  # then nobody is waiting
            self.free -= 1
            return
        handed = Event()
        self._waiting.append(handed)
        try:
            handed.wait(timeout)
        except BaseException:  # killed while waiting (GreenletExit, a caller's Timeout)
            if handed.ready():
                self._pass_on()  # handed a turn it will not use: to the next one
            else:
                self._waiting.remove(handed)
            raise
        if not handed.ready():  # the timeout, not a turn, woke it
            self._waiting.remove(handed)
            raise TurnTimeout()

    def _pass_on(self):
        """A turn ends: to the first caller waiting, held for it until it wakes; else free."""
        if self._waiting:
            self._waiting.popleft().send(True)
        else:
            self.free += 1

    def _note_end(self, started, ended):
        self.seconds_per_turn = ended - started if self.seconds_per_turn is None else (
            0.8 * self.seconds_per_turn + 0.2 * (ended - started))
        if self.admitted <= self.concurrency:  # nobody was waiting: the drain, if any, is over
            self._drain.clear()
            return
        self._drain.append(ended)
        if len(self._drain) > self.concurrency:
            self.seconds_between_ends = (self._drain[-1] - self._drain[0]) / (len(self._drain) - 1)
