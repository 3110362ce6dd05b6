"""Password policy (NIST SP 800-63B 5.1.1.2) and argon2id hashing.

The policy: at least 8 characters, up to 256 (long passphrases welcome, any characters, no
composition rules), and not one of the most common passwords (``common_passwords.txt``).
"""
import functools
import os
import unicodedata

import argon2
from eventlet import tpool
from eventlet.semaphore import Semaphore

MIN_LENGTH = 8
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "common_passwords.txt")

# Config keys: argon2id cost. The defaults are argon2-cffi's (RFC 9106 low-memory profile);
# tests use cheaper ones. Hashes carry their parameters, so changing them never locks anyone out.
TIME_COST_CONFIG_KEY = "PASSWORD_HASH_TIME_COST"
MEMORY_COST_CONFIG_KEY = "PASSWORD_HASH_MEMORY_COST"  # KiB
PARALLELISM_CONFIG_KEY = "PASSWORD_HASH_PARALLELISM"
# argon2 runs at most this many at once per auth process (others wait their turn): a burst of
# logins (30 unknown emails at once) then costs the service's CPU at most this many hashes, not
# every core for seconds while every other request waits.
CONCURRENCY_CONFIG_KEY = "PASSWORD_HASH_CONCURRENCY"
DEFAULT_CONCURRENCY = 1  # one hash already runs PASSWORD_HASH_PARALLELISM (4) threads


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
    defaults = argon2.PasswordHasher()
    return argon2.PasswordHasher(
        time_cost=int(config.get(TIME_COST_CONFIG_KEY, defaults.time_cost)),
        memory_cost=int(config.get(MEMORY_COST_CONFIG_KEY, defaults.memory_cost)),
        parallelism=int(config.get(PARALLELISM_CONFIG_KEY, defaults.parallelism)),
        type=argon2.Type.ID,
    )


class Passwords:
    """Hashes and verifies passwords; verifies against a dummy hash when there is no user, so an
    unknown email costs about as long as a wrong password.

    argon2 is deliberately slow (tens of milliseconds, 64 MiB by default): it runs in eventlet's
    native thread pool, so the service's other greenthreads go on meanwhile.
    """

    def __init__(self, hasher, concurrency=DEFAULT_CONCURRENCY):
        self.hasher = hasher
        self.dummy_hash = hasher.hash("not a real password: timing equalizer")
        self.turns = Semaphore(max(1, int(concurrency)))

    def _run(self, function, *args):
        with self.turns:
            return tpool.execute(function, *args)

    def hash(self, password):
        return self._run(self.hasher.hash, normalize_password(password))

    def verify(self, password_hash, password):
        """True if ``password`` matches; ``password_hash`` None verifies the dummy (False)."""
        try:
            self._run(self.hasher.verify, password_hash or self.dummy_hash,
                      normalize_password(password))
        except argon2.exceptions.VerificationError:  # mismatch or a corrupt hash
            return False
        except argon2.exceptions.InvalidHashError:
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash):
        return self.hasher.check_needs_rehash(password_hash)
