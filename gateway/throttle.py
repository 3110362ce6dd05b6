"""Throttling of failed logins, per account, in this gateway instance's memory.

After ``LOGIN_MAX_FAILURES`` failed logins for one email (case-insensitive) within
``LOGIN_FAILURE_WINDOW_SECONDS``, every login for that email is refused with 429 and a
``Retry-After`` until the oldest failure leaves the window; a successful login clears the count.

Attempts in flight count against the allowance too, so that a burst of parallel guesses cannot
get past the limit before the first failures are recorded.

The counts live in this process: each gateway instance counts on its own, and a restart forgets
them. Behind several gateway instances an attacker gets N times the allowance; a shared store
(Redis, the auth service) is the next step if that matters.
"""
import contextlib
import time
from collections import deque

from nameko.extensions import DependencyProvider

from gateway.http import TooManyRequests
from services.kit.errors import Unauthorized

DEFAULT_MAX_FAILURES = 5
DEFAULT_WINDOW_SECONDS = 300
MAX_TRACKED_ACCOUNTS = 100_000


class FailedLogins:
    def __init__(self, max_failures, window_seconds, clock=time.monotonic):
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures = {}
        self._in_flight = {}

    @staticmethod
    def _key(email):
        return str(email).strip().lower()

    def _recent(self, key):
        failures = self._failures.get(key)
        if failures is None:
            return None
        horizon = self.clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def check(self, email):
        """Raise TooManyRequests when ``email`` has used up its failures (counting the
        attempts still in flight)."""
        key = self._key(email)
        failures = self._recent(key)
        used = (len(failures) if failures else 0) + self._in_flight.get(key, 0)
        if used >= self.max_failures:
            oldest = failures[0] if failures else self.clock()
            retry_after = oldest + self.window_seconds - self.clock()
            raise TooManyRequests("too many failed logins for this account; try again later",
                                  retry_after=max(1, int(retry_after + 0.999)))

    @contextlib.contextmanager
    def attempt(self, email):
        """``with failed_logins.attempt(email):`` checks, then holds a place while the
        credentials are checked; Unauthorized inside counts as a failure, a normal exit
        clears the account's failures, any other error counts as neither."""
        self.check(email)
        key = self._key(email)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        except Unauthorized:
            self.failed(email)
            raise
        else:
            self.succeeded(email)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    def failed(self, email):
        key = self._key(email)
        if key not in self._failures and len(self._failures) >= MAX_TRACKED_ACCOUNTS:
            self._prune()
        self._failures.setdefault(key, deque(maxlen=self.max_failures)).append(self.clock())

    def succeeded(self, email):
        self._failures.pop(self._key(email), None)

    def _prune(self):
        for key in list(self._failures):
            self._recent(key)


class LoginThrottle(DependencyProvider):
    def setup(self):
        config = self.container.config
        self.failed_logins = FailedLogins(
            int(config.get("LOGIN_MAX_FAILURES", DEFAULT_MAX_FAILURES)),
            float(config.get("LOGIN_FAILURE_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS)))

    def get_dependency(self, worker_ctx):
        return self.failed_logins
