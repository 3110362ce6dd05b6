"""Password policy (NIST SP 800-63B 5.1.1.2) and argon2id hashing.

The policy: at least 8 characters, up to 256 (long passphrases welcome, any characters, no
composition rules), and not one of the most common passwords (``common_passwords.txt``).
"""
import functools
import os
import unicodedata

import argon2
from eventlet import tpool

from services.auth.settings import (
    PASSWORD_HASH_CONCURRENCY, PASSWORD_HASH_MAX_WAIT, PASSWORD_HASH_MEMORY_COST,
    PASSWORD_HASH_PARALLELISM, PASSWORD_HASH_QUEUE, PASSWORD_HASH_TIME_COST,
)
from services.kit.turns import Turns

MIN_LENGTH = 8
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "common_passwords.txt")

@functools.lru_cache(maxsize=1)
def common_passwords():
    with open(COMMON_PASSWORDS_FILE, encoding="utf-8") as listing:
        return frozenset(line.strip().lower() for line in listing
                         if line.strip() and not line.startswith("#"))


def normalize_password(password):
    """NFKC, as SP 800-63B asks, so the same passphrase typed differently verifies."""
    return unicodedata.normalize("NFKC", password)


def password_problems(password):
    """The reasons ``password`` is refused (empty: acceptable)."""
    password = normalize_password(password)
    if len(password) < MIN_LENGTH:
        return [f"Must be at least {MIN_LENGTH} characters long."]
    if len(password) > MAX_LENGTH:
        return [f"Must be at most {MAX_LENGTH} characters long."]
    if password.lower() in common_passwords() or len(set(password)) == 1:
        return ["This password is too common; choose another (a passphrase works well)."]
    return []


def make_hasher(config):
    return argon2.PasswordHasher(
        time_cost=PASSWORD_HASH_TIME_COST.read(config),
        memory_cost=PASSWORD_HASH_MEMORY_COST.read(config),
        parallelism=PASSWORD_HASH_PARALLELISM.read(config),
        type=argon2.Type.ID,
    )


class HashingSlots(Turns):
    """A bounded queue in front of argon2 (services/kit/turns.py): ``concurrency`` hashes run,
    the others wait, and one that would wait longer than ``max_wait`` seconds (or find ``queue``
    waiting) is refused at once. argon2 costs ~0.1-0.4 s of CPU per hash at the default cost."""

    def __init__(self, concurrency, queue=None, max_wait=PASSWORD_HASH_MAX_WAIT.default):
        if concurrency < 1 or (queue is not None and queue < 0):
            raise ValueError("PASSWORD_HASH_CONCURRENCY must be >= 1 and PASSWORD_HASH_QUEUE >= 0")
        super().__init__(concurrency, max_wait, queue,
                         busy_message="too many sign-ins at once; try again in a moment")

    def run(self, function, *args):
        with self.turn():
            return tpool.execute(function, *args)


def default_concurrency(config):
    """One hash per PASSWORD_HASH_PARALLELISM CPUs: a hash already runs that many threads."""
    return max(1, (os.cpu_count() or 1) // max(1, PASSWORD_HASH_PARALLELISM.read(config)))


def hashing_slots(config):
    """PASSWORD_HASH_CONCURRENCY (unset: default_concurrency), PASSWORD_HASH_QUEUE and
    PASSWORD_HASH_MAX_WAIT."""
    concurrency = PASSWORD_HASH_CONCURRENCY.read(config)
    return HashingSlots(default_concurrency(config) if concurrency is None else concurrency,
                        PASSWORD_HASH_QUEUE.read(config), PASSWORD_HASH_MAX_WAIT.read(config))


class Passwords:
    """Hashes and verifies passwords; verifies against a dummy hash when there is no user, so an
    unknown email costs about as long as a wrong password.

    argon2 is deliberately slow (tens of milliseconds, 64 MiB by default): it runs in eventlet's
    native thread pool, so the service's other greenthreads go on meanwhile, behind
    ``HashingSlots`` (a burst beyond them is ``Busy`` at once).
    """

    def __init__(self, hasher, slots=None):
        self.hasher = hasher
        self.slots = slots or hashing_slots({})
        # through the slots: it also tells them how long a hash takes here
        self.dummy_hash = self.slots.run(hasher.hash, "not a real password: timing equalizer")

    def hash(self, password):
        return self.slots.run(self.hasher.hash, normalize_password(password))

    def verify(self, password_hash, password):
        """True if ``password`` matches; ``password_hash`` None verifies the dummy (False)."""
        try:
            self.slots.run(self.hasher.verify, password_hash or self.dummy_hash,
                           normalize_password(password))
        except argon2.exceptions.VerificationError:  # mismatch or a corrupt hash
            return False
        except argon2.exceptions.InvalidHashError:
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash):
        return self.hasher.check_needs_rehash(password_hash)
