"""Subprocesses (``nameko run`` with a generated config), readiness, and psutil metering."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import requests
import yaml

MGMT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


def nameko_bin():
    candidate = os.path.join(os.path.dirname(sys.executable), "nameko")
    return candidate if os.path.exists(candidate) else shutil.which("nameko")


class Vhost:
    """A throwaway vhost on the local broker, made and deleted through the management API."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        requests.put(f"{MGMT}/vhosts/{self.name}", auth=AUTH, timeout=10).raise_for_status()
        requests.put(f"{MGMT}/permissions/{self.name}/guest", auth=AUTH, timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        return self

    def __exit__(self, *exc):
        requests.delete(f"{MGMT}/vhosts/{self.name}", auth=AUTH, timeout=30)

    @property
    def amqp_uri(self):
        return f"pyamqp://guest:guest@127.0.0.1:5672/{self.name}"

    def queue(self, queue):
        response = requests.get(f"{MGMT}/queues/{self.name}/{queue}", auth=AUTH, timeout=10)
        return response.json() if response.status_code == 200 else None

    def consumers(self, queue):
        info = self.queue(queue)
        return (info or {}).get("consumers", 0)

    def purge(self, queue):
        requests.delete(f"{MGMT}/queues/{self.name}/{queue}/contents", auth=AUTH, timeout=10)

    def delete_queue(self, queue):
        requests.delete(f"{MGMT}/queues/{self.name}/{queue}", auth=AUTH,
                        timeout=10).raise_for_status()


class CtlVhost(Vhost):
    """procs.Vhost through rabbitmqctl, for a broker without the management plugin."""

    def _ctl(self, *args):
        return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def __enter__(self):
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def __exit__(self, *exc):
        self._ctl("delete_vhost", self.name)

    def consumers(self, queue):
        for line in self._ctl("list_queues", "-p", self.name, "name", "consumers").splitlines():
            name, _, count = line.rpartition("\t")
            if name == queue:
                return int(count)
        return 0


def broker_version():
    try:
        return requests.get(f"{MGMT}/overview", auth=AUTH, timeout=10).json()["rabbitmq_version"]
    except Exception:  # noqa: BLE001
        return "unknown"


def broker_process():
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "beam.smp" or "beam.smp" in " ".join(proc.info["cmdline"] or []):
            return proc
    return None


class Service:
    """One ``nameko run`` subprocess."""

    def __init__(self, label, targets, config, workdir, ready):
        self.label = label
        self.targets = targets
        self.config = config
        self.workdir = workdir
        self.ready = ready  # callable: True once it serves
        self.popen = None
        self.proc = None
        self.peak_rss = 0
        self.profile_to = None

    def start(self, cwd):
        path = os.path.join(self.workdir, f"{self.label}.yml")
        with open(path, "w") as out:
            yaml.safe_dump(self.config, out)
        self.log_path = os.path.join(self.workdir, f"{self.label}.log")
        self.log = open(self.log_path, "wb")
        command = [nameko_bin(), "run", "--config", path, *self.targets]
        if self.profile_to:  # pyinstrument, or cProfile with BENCH_CPROFILE (=cpu: CPU time)
            if os.environ.get("BENCH_CPROFILE") == "cpu":  # timed by CPU, not wall clock
                command = [sys.executable, "-m", "bench.cpuprofile", self.profile_to,
                           "-m", "nameko", *command[1:]]
            elif os.environ.get("BENCH_CPROFILE"):
                command = [sys.executable, "-m", "cProfile", "-o", self.profile_to,
                           "-m", "nameko", *command[1:]]
            else:
                command = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                           "-o", self.profile_to, "-m", "nameko", *command[1:]]
        self.popen = subprocess.Popen(command,
                                      cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        self.proc = psutil.Process(self.popen.pid)

    def wait_ready(self, deadline):
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # noqa: BLE001 (not up yet)
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} not ready in time: {self.tail()}")

    def tail(self, chars=2000):
        try:
            with open(self.log_path, "rb") as log:
                return log.read()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def terminate(self):
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self):
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60 if self.profile_to else 10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if getattr(self, "log", None):
            self.log.close()


class Meter:
    """Peak RSS of every service (sampled), and CPU per phase of services, broker and harness."""

    def __init__(self, services):
        self.services = services
        self.broker = broker_process()
        self.harness = psutil.Process()
        self.phases = {}  # phase -> {process: [cpu%, ...]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def _sample(self):
        while not self._stop.is_set():
            for service in self.services:
                try:
                    service.peak_rss = max(service.peak_rss, service.proc.memory_info().rss)
                except (psutil.Error, AttributeError):
                    pass
            self._stop.wait(0.1)

    def _cpu(self):
        times = {}
        targets = [(s.label, s.proc) for s in self.services if s.proc is not None]
        targets += [("broker (beam.smp)", self.broker), ("harness (load generator)", self.harness)]
        for label, proc in targets:
            if proc is None:
                continue
            try:
                cpu = proc.cpu_times()
                times[label] = cpu.user + cpu.system
            except psutil.Error:
                pass
        return times

    def phase(self, name):
        meter = self

        class Phase:
            def __enter__(self):
                self.before, self.started = meter._cpu(), time.monotonic()
                return self

            def __exit__(self, *exc):
                wall = time.monotonic() - self.started
                after = meter._cpu()
                record = meter.phases.setdefault(name, {})
                for label, spent in after.items():
                    if label in self.before and wall > 0:
                        record.setdefault(label, []).append(
                            100.0 * (spent - self.before[label]) / wall)
        return Phase()


def http_ok(url):
    def check():
        return requests.get(url, timeout=1).status_code < 500
    return check


def dump(obj):
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
