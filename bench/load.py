"""HTTP load from the harness: closed loop (N clients, keep-alive) and open loop (fixed rate)."""
import http.client
import threading
import time
from urllib.parse import urlparse


def _connection(base_url):
    url = urlparse(base_url)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=30)


class _Client:
    """One keep-alive connection; a request that fails counts as status 0 and reconnects."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.conn = _connection(base_url)

    def send(self, method, path, headers, body=b""):
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            self.last_body = response.read()
            self.last_headers = response.headers
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = _connection(self.base_url)
            return 0

    def close(self):
        self.conn.close()


def closed_loop(base_url, clients, requests_per_client, make_request, deadline_seconds=60):
    """``clients`` threads, each sending ``requests_per_client`` requests back to back.

    ``make_request(client, index)`` -> (method, path, headers). Returns
    (ok_count, error_count, seconds, latencies_ms). Bounded by count and by deadline.
    """
    latencies, errors = [], [0]
    lock = threading.Lock()
    start_gate = threading.Event()
    deadline = time.monotonic() + deadline_seconds

    def client(number):
        conn = _Client(base_url)
        mine, failed = [], 0
        start_gate.wait()
        for index in range(requests_per_client):
            if time.monotonic() > deadline:
                break
            method, path, headers = make_request(number, index)
            sent = time.perf_counter()
            status = conn.send(method, path, headers)
            if status in (200, 201):
                mine.append((time.perf_counter() - sent) * 1000.0)
            else:
                failed += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    start_gate.set()
    for thread in threads:
        thread.join()
    return len(latencies), errors[0], time.perf_counter() - started, latencies


def open_loop(base_url, rate, count, make_request, workers=32):
    """``count`` requests at a steady ``rate`` per second (sent on schedule by a worker pool).

    Returns [(index, wall_time_sent, status)]."""
    results = []
    lock = threading.Lock()
    next_index = [0]
    started = time.time() + 0.2

    def worker():
        conn = _Client(base_url)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= count:
                break
            due = started + index / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            method, path, headers = make_request(0, index)
            sent = time.time()
            status = conn.send(method, path, headers)
            with lock:
                results.append((index, sent, status))
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values, pct):
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(round(pct / 100.0 * (len(ordered) - 1)))))
    return ordered[rank]
