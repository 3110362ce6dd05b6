"""auth's login throttle (services/auth/throttle.py) on a real in-memory database and a fake
clock, through AuthService.authenticate."""

import argon2
import pytest

from services.auth.models import Base
from services.auth.passwords import Passwords
from services.auth.service import AuthService
from services.auth.throttle import LoginThrottle
from services.kit.errors import TooManyRequests, Unauthorized
from tests.support.db import in_memory_session, rpc_worker

PASSWORD = "correct horse battery staple"
SETTINGS = dict(LOGIN_FREE_FAILURES_PER_ADDRESS=4, LOGIN_FREE_FAILURES_PER_ACCOUNT=3,
                LOGIN_DELAY_BASE_SECONDS=2, LOGIN_DELAY_MAX_SECONDS=30,
                LOGIN_FAILURE_WINDOW_SECONDS=600)


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


class CountingPasswords(Passwords):
    checks = 0

    def verify(self, password_hash, password):
        self.checks += 1
        return super().verify(password_hash, password)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def auth(clock):
    with in_memory_session(Base.metadata) as session:
        passwords = CountingPasswords(argon2.PasswordHasher(time_cost=1, memory_cost=1024,
                                                            parallelism=1))
        service = rpc_worker(AuthService, session,
                                 passwords=passwords,
                                 throttle=LoginThrottle(SETTINGS, clock=clock))
        service.register("ada@example.com", PASSWORD, "Ada")
        yield service


def attempt(auth, password, address, email="ada@example.com"):
    try:
        auth.authenticate(email, password, address)
        return 200
    except Unauthorized:
        return 401
    except TooManyRequests as exc:
        return 429, exc.retry_after


def test_others_failures_never_refuse_the_owners_correct_password(auth, clock):
    for address in ("6.6.6.1", "6.6.6.2"):
        for _ in range(10):
            attempt(auth, "guess", address)
            clock.now += 1
    # the account is deep in its delay for the guessers ...
    assert attempt(auth, "guess", "6.6.6.1")[0] == 429
    # ... but its owner, from an address that has not failed for it, gets in at once
    assert attempt(auth, PASSWORD, "192.0.2.10") == 200


def test_delays_grow_per_address_and_refused_attempts_cost_no_argon2(auth, clock):
    statuses = [attempt(auth, "guess", "6.6.6.6", email=f"u{i}@example.com") for i in range(4)]
    assert statuses == [401] * 4  # the free failures, on unknown emails too
    checks = auth.passwords.checks
    assert attempt(auth, "guess", "6.6.6.6", email="u9@example.com") == (429, 2)
    assert attempt(auth, PASSWORD, "6.6.6.6") == (429, 2)  # any account, from this address
    assert auth.passwords.checks == checks
    waits = []
    for _ in range(6):
        clock.now += 1000  # well past each delay, within no window (the last failure renews it)
        clock.now -= 1000 - 31
        assert attempt(auth, "guess", "6.6.6.6", email="u9@example.com") == 401
        waits.append(attempt(auth, "guess", "6.6.6.6", email="u9@example.com")[1])
    assert waits == [4, 8, 16, 30, 30, 30]
    assert attempt(auth, PASSWORD, "192.0.2.10") == 200  # other addresses are not slowed


def test_one_slot_per_delay_however_many_attempts_are_in_flight(auth, clock):
    for i in range(4):
        assert attempt(auth, "guess", "6.6.6.6", email=f"x{i}@example.com") == 401
    clock.now += 2
    throttle, session = auth.throttle, auth.db.session
    throttle.admit(session, "y@example.com", "6.6.6.6")  # takes the slot ...
    with pytest.raises(TooManyRequests):  # ... a parallel attempt finds it taken
        throttle.admit(session, "z@example.com", "6.6.6.6")


def test_a_success_is_not_counted_and_clears_the_account(auth, clock):
    for _ in range(2):
        assert attempt(auth, "guess", "198.51.100.1") == 401
    assert attempt(auth, PASSWORD, "198.51.100.1") == 200
    # the account's count started again (two more would have reached its 3 free failures)
    assert attempt(auth, "guess", "198.51.100.2") == 401
    assert attempt(auth, "guess", "198.51.100.2") == 401
    for _ in range(20):  # parallel or repeated correct logins are never refused
        assert attempt(auth, PASSWORD, "198.51.100.1") == 200


def test_failures_are_forgotten_after_the_window(auth, clock):
    for _ in range(5):
        attempt(auth, "guess", "6.6.6.6")
    assert attempt(auth, PASSWORD, "6.6.6.6")[0] == 429
    clock.now += 601
    assert attempt(auth, PASSWORD, "6.6.6.6") == 200
    auth.throttle.forget_stale(auth.db.session)
