"""Login throttling in auth's own database: growing delays, never a lock-out of the owner.

Three counters of recent failed logins (each forgotten ``LOGIN_FAILURE_WINDOW_SECONDS`` after
its last failure), keyed by hashes, never by the email or address themselves:

- per client address (any email, known or not): after ``LOGIN_FREE_FAILURES_PER_ADDRESS``
  failures, each further attempt from that address must wait a delay that doubles with every
  failure, from ``LOGIN_DELAY_BASE_SECONDS`` up to ``LOGIN_DELAY_MAX_SECONDS``;
- per account (the normalized email, whether or not such a user exists): the same, after
  ``LOGIN_FREE_FAILURES_PER_ACCOUNT`` failures from anywhere, but only for addresses that have
  failed for this account themselves;
- per (address, account) pair: what "failed for this account themselves" means.

So failures from other addresses slow the account down for everyone who keeps guessing, while
its owner, from an address that has not failed for it, still signs in at the first try: others'
failures alone never refuse a correct password. A guesser spread over many addresses gets one
free try per address and account, then waits like everyone else; a single address is slowed on
every account at once.

An attempt in a delay takes the next slot atomically (``UPDATE ... WHERE next_attempt_at <=
now``) before the password is checked: parallel attempts from one address cannot all pass, and
an attempt is counted once, when it fails; one that succeeds is not counted at all. A refused
attempt costs one indexed read and no argon2. The state is in the database, so it is shared by
every auth and gateway replica and survives restarts.

Unlike the rest of auth's writes, which the kit commits when the RPC returns (services/kit/rpc.py),
each step here commits its own transaction in the worker's session, on purpose: ``admit`` must
have taken its slot before the slow password check, or parallel attempts would all pass it;
``failed`` must stay counted although the RPC then fails with Unauthorized (which the kit rolls
back); ``succeeded`` ends its transaction before a possible rehash, so no transaction (nor
SQLite's one connection) is held during argon2.
"""
import hashlib
import time

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from services.auth.models import LoginThrottleEntry
from services.auth.settings import (
    LOGIN_DELAY_BASE_SECONDS, LOGIN_DELAY_MAX_SECONDS, LOGIN_FAILURE_WINDOW_SECONDS,
    LOGIN_FREE_FAILURES_PER_ACCOUNT, LOGIN_FREE_FAILURES_PER_ADDRESS,
)
from services.kit.errors import TooManyRequests

REFUSED = "too many failed logins; try again later"


def _key(kind, *parts):
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "backslashreplace")).hexdigest()
    return f"{kind}:{digest[:40]}"


class LoginThrottle:
    def __init__(self, config, clock=time.time):
        self.free_per_address = LOGIN_FREE_FAILURES_PER_ADDRESS.read(config)
        self.free_per_account = LOGIN_FREE_FAILURES_PER_ACCOUNT.read(config)
        self.base_delay = LOGIN_DELAY_BASE_SECONDS.read(config)
        self.max_delay = LOGIN_DELAY_MAX_SECONDS.read(config)
        self.window = LOGIN_FAILURE_WINDOW_SECONDS.read(config)
        self.clock = clock

    def delay(self, failures, free):
        """Seconds between attempts after ``failures`` (0 while within the free ones)."""
        if failures < free:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(failures - free, 40))

    @staticmethod
    def keys(email, address):
        keys = {"account": _key("account", email)}
        if address:
            keys["address"] = _key("address", address)
            keys["pair"] = _key("pair", address, email)
        return keys

    def admit(self, session, email, address):
        """Return if this attempt may check a password; else TooManyRequests (Retry-After)."""
        now = self.clock()
        keys = self.keys(email, address)
        rows = {row.key: row for row in session.execute(
            select(LoginThrottleEntry).where(LoginThrottleEntry.key.in_(keys.values()))
        ).scalars()}
        failures = {kind: self._recent_failures(rows.get(key), now) for kind, key in keys.items()}
        gates = []
        if failures.get("address", 0) >= self.free_per_address:
            gates.append((keys["address"], self.delay(failures["address"],
                                                      self.free_per_address)))
        if failures["account"] >= self.free_per_account and failures.get("pair", 1) > 0:
            # no address known (an RPC caller of its own): the account's delay applies
            gates.append((keys["account"], self.delay(failures["account"],
                                                      self.free_per_account)))
        for key, delay in gates:
            claimed = session.execute(
                update(LoginThrottleEntry)
                .where(LoginThrottleEntry.key == key, LoginThrottleEntry.next_attempt_at <= now)
                .values(next_attempt_at=now + delay)
                .execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                session.rollback()
                waiting = session.execute(select(LoginThrottleEntry.next_attempt_at)
                                          .where(LoginThrottleEntry.key == key)).scalar()
                session.rollback()
                raise TooManyRequests(REFUSED, retry_after=max(1.0, (waiting or now) - now))
        if gates:
            session.commit()  # the slot is taken before the (slow) password check
        else:
            session.rollback()  # end the read: no transaction held during argon2

    def failed(self, session, email, address):
        now = self.clock()
        insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql"
                  else sqlite.insert)
        table = LoginThrottleEntry
        horizon = now - self.window
        for kind, key in self.keys(email, address).items():
            free = {"address": self.free_per_address}.get(kind, self.free_per_account)
            session.execute(
                insert(table).values(key=key, failures=1, last_failure_at=now,
                                     next_attempt_at=now + self.delay(1, free))
                .on_conflict_do_update(index_elements=[table.key], set_={
                    "failures": case((table.last_failure_at < horizon, 1),
                                     else_=table.failures + 1),
                    "last_failure_at": now}))
            count = session.execute(select(table.failures).where(table.key == key)).scalar()
            session.execute(update(table).where(table.key == key)
                            .values(next_attempt_at=now + self.delay(count, free))
                            .execution_options(synchronize_session=False))
        session.commit()

    def succeeded(self, session, email, address):
        """The owner proved it: the account's and this pair's failures are forgotten; the
        address's stay (a guesser's own account must not wash its address clean)."""
        keys = self.keys(email, address)
        session.execute(delete(LoginThrottleEntry).where(LoginThrottleEntry.key.in_(
            [keys["account"]] + ([keys["pair"]] if "pair" in keys else []))))
        session.commit()

    def forget_stale(self, session):
        """Delete counters whose last failure left the window (they count as 0 already)."""
        session.execute(delete(LoginThrottleEntry).where(
            LoginThrottleEntry.last_failure_at < self.clock() - self.window))
        session.commit()

    def _recent_failures(self, row, now):
        if row is None or row.last_failure_at < now - self.window:
            return 0
        return row.failures
