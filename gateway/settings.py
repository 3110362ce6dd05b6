"""The gateway's settings: tokens, the HTTP door, logins, health, the live feed (the reader:
services/kit/settings.py; the bind address is nameko's WEB_SERVER_ADDRESS, declared there)."""
from services.kit.settings import Setting, integer, seconds, text

# An empty ENVIRONMENT is no environment: the gateway refuses to start (gateway/auth.py).
ENVIRONMENT = Setting("ENVIRONMENT", text, "development", "development or production",
                      empty="")
JWT_SECRET = Setting("JWT_SECRET", text, "dev-only-insecure-jwt-secret-CHANGE-ME",
                     "the HS256 signing key (the default: development only)")
JWT_TTL_SECONDS = Setting("JWT_TTL_SECONDS", integer, 3600, "a token's lifetime, seconds")
USER_CACHE_SECONDS = Setting("USER_CACHE_SECONDS", seconds, 30.0,
                             "seconds the gateway remembers that a token's user exists")
MAX_BODY_BYTES = Setting("MAX_BODY_BYTES", integer, 64 * 1024,
                         "larger request bodies get a 413")

# The door (gateway/door.py).
HTTP_IDLE_TIMEOUT = Setting("HTTP_IDLE_TIMEOUT", seconds, 30.0,
                            "seconds a silent connection stays open")
HTTP_HEADER_TIMEOUT = Setting("HTTP_HEADER_TIMEOUT", seconds, 10.0,
                              "seconds for a request's line and headers (else 408)")
HTTP_BODY_TIMEOUT = Setting("HTTP_BODY_TIMEOUT", seconds, 30.0,
                            "seconds for a request's whole body (else 408)")
HTTP_SOCKET_TIMEOUT = Setting("HTTP_SOCKET_TIMEOUT", seconds, 30.0,
                              "seconds for one send or receive")
HTTP_MAX_CONNECTIONS_PER_CLIENT = Setting("HTTP_MAX_CONNECTIONS_PER_CLIENT", integer, 64,
                                          "open connections per client address (429 beyond)")
HTTP_MAX_CONNECTIONS = Setting("HTTP_MAX_CONNECTIONS", integer, 2000,
                               "open connections in all (503 beyond)")

LOGIN_MAX_CONCURRENT = Setting("LOGIN_MAX_CONCURRENT", integer, 4,
                               "logins in workers at once; more wait up to RPC_TIMEOUT, then 429")
LOGIN_MAX_WAIT = Setting("LOGIN_MAX_WAIT", seconds, 2.0,
                         "a login that would wait longer for its turn gets a 503 at once")
TRUSTED_PROXY_HOPS = Setting("TRUSTED_PROXY_HOPS", integer, 0,
                             "reverse proxies whose X-Forwarded-For names the client")
HEALTH_TIMEOUT = Setting("HEALTH_TIMEOUT", seconds, 2.0,
                         "seconds GET /health waits for the broker and each service")
LIVE_BUFFER = Setting("LIVE_BUFFER", integer, 256,
                      "events a slow live stream may lag before its oldest are dropped")
LIVE_MAX_STREAMS = Setting("LIVE_MAX_STREAMS", integer, 100, "open live streams per gateway")
