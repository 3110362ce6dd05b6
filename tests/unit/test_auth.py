"""auth's rules, through its entrypoints with nameko's worker_factory (no broker).

The database is a real in-memory SQLite session; the event dispatcher is worker_factory's mock.
"""
import time

import argon2
import pytest
from sqlalchemy import select

from services.auth.models import Base, User
from services.auth.passwords import Passwords, common_passwords, password_problems
from services.auth.service import AuthService
from services.kit.errors import Conflict, NotFound, Unauthorized, ValidationError
from tests.support.db import in_memory_session, rpc_worker

CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
GOOD_PASSWORD = "correct horse battery staple"


@pytest.fixture
def session():
    with in_memory_session(Base.metadata) as session:
        yield session


@pytest.fixture
def service(session):
    return rpc_worker(AuthService, session,
                          passwords=Passwords(CHEAP_HASHER))


def register(service, email="Ada@Example.com", password=GOOD_PASSWORD, name="Ada", **kwargs):
    return service.register(email, password, name, **kwargs)


def test_register_returns_the_user_without_the_hash_and_emits_user_registered(service, session):
    user = register(service, email="  Ada.Lovelace@Example.COM ")

    assert set(user) == {"id", "email", "name", "role", "created_at"}
    assert user["email"] == "ada.lovelace@example.com"
    assert user["role"] == "student"
    assert user["created_at"].endswith("+00:00")
    service.dispatch.assert_called_once_with(
        "user.registered", {"user_id": user["id"], "email": "ada.lovelace@example.com",
                            "name": "Ada"})
    stored = session.execute(select(User)).scalar_one()
    assert stored.password_hash.startswith("$argon2id$")
    assert GOOD_PASSWORD not in stored.password_hash


def test_register_an_instructor(service):
    assert register(service, role="instructor")["role"] == "instructor"


def test_register_an_admin_over_rpc(service):
    # only `knowledge-nest create-admin` asks for it; the gateway's public register refuses it
    assert register(service, role="admin")["role"] == "admin"


def test_email_is_unique_case_insensitively(service):
    register(service, email="ada@example.com")
    with pytest.raises(Conflict):
        register(service, email="  ADA@example.com")
    assert service.dispatch.call_count == 1


@pytest.mark.parametrize("field, kwargs", [
    ("email", {"email": "not-an-email"}),
    ("email", {"email": ""}),
    ("name", {"name": "   "}),
    ("name", {"name": "x" * 101}),
    ("role", {"role": "superuser"}),
    ("password", {"password": "short1!"}),
    ("password", {"password": "x" * 257}),
    ("password", {"password": "password123"}),
    ("password", {"password": "Qwertyuiop"}),
    ("password", {"password": "aaaaaaaaaaaa"}),
    ("password", {"password": 12345678}),
])
def test_register_refuses_invalid_input_naming_the_field(service, field, kwargs):
    with pytest.raises(ValidationError) as caught:
        register(service, **kwargs)
    assert field in caught.value.fields
    service.dispatch.assert_not_called()


@pytest.mark.parametrize("password", [
    "eight ch",                       # exactly 8 characters
    "x" * 100 + "a long passphrase",  # long
    "мой пароль очень надёжный",      # any characters
    "Tr0ub4dor&3 is not needed",
])
def test_password_policy_accepts_passphrases_without_composition_rules(password):
    assert password_problems(password) == []


def test_the_common_password_list_is_substantial_and_includes_the_classics():
    common = common_passwords()
    assert len(common) >= 300
    assert {"password", "123456", "qwerty", "test123", "letmein"} <= common


def test_authenticate_with_the_right_password(service):
    user = register(service)
    assert service.authenticate("ADA@example.com ", GOOD_PASSWORD) == user


def test_wrong_password_and_unknown_email_get_the_same_answer(service):
    register(service)
    with pytest.raises(Unauthorized) as wrong_password:
        service.authenticate("ada@example.com", "not the password")
    with pytest.raises(Unauthorized) as unknown_email:
        service.authenticate("nobody@example.com", GOOD_PASSWORD)
    assert str(wrong_password.value) == str(unknown_email.value)


def test_an_unknown_email_still_costs_a_hash_verification(session):
    """Verifying against a dummy hash: an unknown email is not answered faster (no enumeration)."""
    calls = []

    class CountingHasher(argon2.PasswordHasher):
        def verify(self, hash, password):
            calls.append(hash)
            return super().verify(hash, password)

    service = rpc_worker(AuthService, session,
                             passwords=Passwords(CountingHasher(time_cost=1, memory_cost=1024,
                                                                parallelism=1)))
    with pytest.raises(Unauthorized):
        service.authenticate("nobody@example.com", GOOD_PASSWORD)
    assert len(calls) == 1 and calls[0].startswith("$argon2id$")


def test_timing_of_unknown_email_and_wrong_password_is_comparable(session):
    """With the production cost, both take a full argon2 verification (loose bound: shared CI)."""
    service = rpc_worker(AuthService, session,
                             passwords=Passwords(argon2.PasswordHasher()))
    register(service)

    def duration(email):
        start = time.perf_counter()
        with pytest.raises(Unauthorized):
            service.authenticate(email, "wrong password here")
        return time.perf_counter() - start

    wrong_password = min(duration("ada@example.com") for _ in range(3))
    unknown_email = min(duration("nobody@example.com") for _ in range(3))
    assert unknown_email > wrong_password / 3


def test_authenticate_rehashes_a_hash_made_with_older_cheaper_parameters(session):
    old = rpc_worker(AuthService, session,
                         passwords=Passwords(CHEAP_HASHER))
    register(old)
    stronger = argon2.PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    new = rpc_worker(AuthService, session,
                         passwords=Passwords(stronger))
    new.authenticate("ada@example.com", GOOD_PASSWORD)
    stored = session.execute(select(User)).scalar_one()
    assert not stronger.check_needs_rehash(stored.password_hash)
    assert new.authenticate("ada@example.com", GOOD_PASSWORD)["email"] == "ada@example.com"


def test_get_user(service):
    user = register(service)
    assert service.get_user(user["id"]) == user
    with pytest.raises(NotFound):
        service.get_user(user["id"] + 1)
    with pytest.raises(ValidationError):
        service.get_user("1")


def test_health(service):
    assert service.health() == {"service": "auth", "database": "ok"}


def test_a_burst_beyond_the_hashing_slots_is_refused_at_once_not_queued():
    import time

    import eventlet

    from services.auth.passwords import HashingSlots
    from services.kit.errors import Busy

    slow = argon2.PasswordHasher(time_cost=4, memory_cost=32 * 1024, parallelism=1)
    passwords = Passwords(slow, HashingSlots(concurrency=1, queue=1))
    outcomes = []

    def sign_in():
        started = time.monotonic()
        try:
            passwords.hash("correct horse battery staple")
            outcomes.append(("hashed", time.monotonic() - started))
        except Busy as exc:
            outcomes.append(("busy", time.monotonic() - started, str(exc)))

    threads = [eventlet.spawn(sign_in) for _ in range(5)]
    for thread in threads:
        thread.wait()

    assert sorted(outcome[0] for outcome in outcomes) == ["busy"] * 3 + ["hashed"] * 2
    hashed = [outcome[1] for outcome in outcomes if outcome[0] == "hashed"]
    refused = [outcome for outcome in outcomes if outcome[0] == "busy"]
    # the refused ones did not wait for a hash: each answered before the first hash finished
    assert max(outcome[1] for outcome in refused) < min(hashed)
    assert "too many sign-ins" in refused[0][2]
    # and the slots are free again afterwards
    assert passwords.verify(passwords.hash("another fine passphrase"), "another fine passphrase")


def test_hashing_slots_default_to_the_cpus_per_hash_and_a_wait_bound():
    import os

    from services.auth.passwords import hashing_slots
    from services.auth.settings import PASSWORD_HASH_MAX_WAIT

    # one hash per PASSWORD_HASH_PARALLELISM (4 lanes) CPUs, at least one
    slots = hashing_slots({})
    assert slots.concurrency == max(1, (os.cpu_count() or 1) // 4)
    assert (slots.queue, slots.max_wait) == (None, PASSWORD_HASH_MAX_WAIT.default)
    assert hashing_slots({"PASSWORD_HASH_PARALLELISM": 1}).concurrency == (os.cpu_count() or 1)
    assert hashing_slots({"PASSWORD_HASH_CONCURRENCY": 2, "PASSWORD_HASH_QUEUE": 0}).queue == 0
    with pytest.raises(ValueError):
        hashing_slots({"PASSWORD_HASH_CONCURRENCY": 0})


def test_the_queue_is_as_long_as_the_hash_cost_allows():
    from services.auth.passwords import HashingSlots

    slots = HashingSlots(concurrency=1, max_wait=1.0)
    slots.seconds_per_turn = 0.25  # as measured from recent hashes
    slots.admitted = 3             # one hashing, two waiting: the next waits for 3 hashes
    assert slots.expected_wait() == 0.75
    slots.admitted = 5             # the next would wait 1.25 s: refused
    with pytest.raises(Exception, match="too many sign-ins"):
        slots.run(lambda: None)
    slots.seconds_per_turn = 0.001  # a cheap hash: the same crowd is fine
    assert slots.run(lambda: "hashed") == "hashed"
