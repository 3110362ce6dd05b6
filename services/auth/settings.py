"""auth's settings (the reader: services/kit/settings.py)."""
from services.kit.settings import Setting, integer, seconds

# argon2id's cost: argon2-cffi's defaults (RFC 9106's low-memory profile); tests use cheaper
# ones. Hashes carry their parameters, so changing them never locks anyone out.
PASSWORD_HASH_TIME_COST = Setting("PASSWORD_HASH_TIME_COST", integer, 3, "argon2id iterations")
PASSWORD_HASH_MEMORY_COST = Setting("PASSWORD_HASH_MEMORY_COST", integer, 65536,
                                    "argon2id memory, KiB")
PASSWORD_HASH_PARALLELISM = Setting("PASSWORD_HASH_PARALLELISM", integer, 4,
                                    "argon2id lanes (threads per hash)")
# A burst of logins costs the CPU at most PASSWORD_HASH_CONCURRENCY hashes at once; the excess is
# refused at once (503) rather than queued until the gateway's RPC_TIMEOUT.
PASSWORD_HASH_CONCURRENCY = Setting("PASSWORD_HASH_CONCURRENCY", integer, None,
                                    "hashes at once (unset: one per PARALLELISM CPUs, >= 1)")
PASSWORD_HASH_QUEUE = Setting("PASSWORD_HASH_QUEUE", integer, None,
                              "hashes that may wait for a turn (unset: no fixed cap)")
PASSWORD_HASH_MAX_WAIT = Setting("PASSWORD_HASH_MAX_WAIT", seconds, 2.0,
                                 "seconds a hash may expect to wait for its turn (well inside "
                                 "the callers' RPC_TIMEOUT)")

# The login throttle (services/auth/throttle.py).
LOGIN_FREE_FAILURES_PER_ADDRESS = Setting("LOGIN_FREE_FAILURES_PER_ADDRESS", integer, 10,
                                          "failures of a client address before its delays")
LOGIN_FREE_FAILURES_PER_ACCOUNT = Setting("LOGIN_FREE_FAILURES_PER_ACCOUNT", integer, 5,
                                          "failures of an account before its delays")
LOGIN_DELAY_BASE_SECONDS = Setting("LOGIN_DELAY_BASE_SECONDS", seconds, 1.0,
                                   "the first delay, doubling with each failure")
LOGIN_DELAY_MAX_SECONDS = Setting("LOGIN_DELAY_MAX_SECONDS", seconds, 300.0, "the longest delay")
LOGIN_FAILURE_WINDOW_SECONDS = Setting("LOGIN_FAILURE_WINDOW_SECONDS", seconds, 3600.0,
                                       "seconds after the last failure that failures are forgotten")
