"""A burst of sign-ins beyond what auth can hash: the excess is refused at once, never queued
until RPC_TIMEOUT, and the suite keeps answering everything else."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.service import GatewayService
from services.auth.service import AuthService

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


def test_logins_beyond_the_hashing_queue_get_503_with_retry_after_at_once(start_suite):
    # one hash at a time, one waiting; each costs tens of milliseconds of real argon2
    api = start_suite(AuthService, GatewayService, PASSWORD_HASH_TIME_COST=6,
                      PASSWORD_HASH_MEMORY_COST=64 * 1024, PASSWORD_HASH_PARALLELISM=1,
                      PASSWORD_HASH_CONCURRENCY=1, PASSWORD_HASH_QUEUE=1, RPC_TIMEOUT=20)
    # eight students, one sign-in each: the gateway's per-account throttle stays out of it
    for number in range(8):
        assert api.register(f"burst{number}@example.com", PASSWORD, "Burst").status_code == 201

    def login(number):
        started = time.monotonic()
        response = api.post("/api/auth/login",
                            json={"email": f"burst{number}@example.com", "password": PASSWORD})
        return response, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(login, range(8)))

    statuses = sorted(response.status_code for response, _ in results)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2  # the ones that got a slot
    refused = [(response, seconds) for response, seconds in results if response.status_code == 503]
    for response, seconds in refused:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "service_unavailable"
        assert "too many sign-ins" in response.json()["message"]
        assert seconds < 5  # refused at once: nowhere near RPC_TIMEOUT (20 s)
    # once the burst is over, a sign-in goes through again
    assert login(0)[0].status_code == 200
