"""A three-node RabbitMQ cluster on this machine, beside (and never touching) its own broker.

    python -m tests.support.cluster start [--dir var/cluster]   # make cluster
    python -m tests.support.cluster stop [--dir var/cluster]    # make cluster-stop

The test suite's ``rabbit_cluster`` fixture (tests/conftest.py) runs the same code with a
temporary directory and the first free set of ports.

What keeps it apart from the machine's node (``rabbit@localhost``, 5672/15672/25672, epmd 4369):

- its own ``HOME`` with its own ``.erlang.cookie`` for every node *and* every CLI call, so a
  CLI call aimed at the wrong node cannot even authenticate;
- its own epmd on its own port (``ERL_EPMD_PORT``), so nothing registers with the shared one;
- RabbitMQ's own scripts under /usr/lib/rabbitmq/bin (the /usr/sbin wrappers ``su`` to the
  rabbitmq user and read /etc/rabbitmq/rabbitmq-env.conf, which names the shared node), with
  every path (config, data, logs, pid file) under the cluster's directory;
- a process is signalled only if its pid comes from our node's pid file and its
  ``/proc/PID/environ`` names our node's data directory. Nothing is ever killed by name.

Each node runs one scheduler (``+S 1:1``) and has its memory capped (the machine has 2 cores
shared with other work): idle, a node takes ~130 MiB and ~0.5 % of a core.
"""
import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from tests.support import processes

eventlet_spawn = processes.eventlet.spawn  # rabbitmqctl calls wait cooperatively

RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"
SIZE = 3
# the first cluster's ports; another cluster on the same machine shifts every one by 10 (by 1
# for epmd): AMQP 5701-5703, management 15701-15703, distribution 25701-25703, CLI 35701-35709
AMQP_BASE, MANAGEMENT_BASE, DIST_BASE, CTL_BASE, EPMD_BASE = 5701, 15701, 25701, 35701, 4370
START_TIMEOUT = 120

RABBITMQ_CONF = """\
listeners.tcp.default = 127.0.0.1:{amqp_port}
loopback_users.guest = true
management.tcp.ip = 127.0.0.1
management.tcp.port = {management_port}
disk_free_limit.absolute = 200MB
vm_memory_high_watermark.absolute = 1GB
# quorum queues keep their write-ahead log in memory until it rolls over (512 MiB by default)
raft.wal_max_size_bytes = 64000000
"""


class ClusterError(RuntimeError):
    pass


def port_free(port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Node:
    def __init__(self, cluster, index):
        self.cluster = cluster
        self.index = index  # 1-based
        offset = cluster.slot * 10 + index - 1
        self.name = f"kn{index}@localhost"
        self.amqp_port = AMQP_BASE + offset
        self.management_port = MANAGEMENT_BASE + offset
        self.dist_port = DIST_BASE + offset
        self.dir = os.path.join(cluster.base_dir, f"kn{index}")
        self.mnesia_base = os.path.join(self.dir, "mnesia")
        self.pid_file = os.path.join(self.dir, "rabbitmq.pid")
        self.app_stopped = False

    def __repr__(self):
        return f"<Node {self.name} amqp={self.amqp_port}>"

    @property
    def host(self):
        return f"127.0.0.1:{self.amqp_port}"

    def env(self):
        cluster = self.cluster
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=cluster.home,
            ERL_EPMD_PORT=str(cluster.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1",
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=os.path.join(cluster.base_dir, "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(cluster.base_dir, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=self.mnesia_base,
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_PID_FILE=self.pid_file,
            RABBITMQ_CTL_DIST_PORT_MIN=str(cluster.ctl_port_min),
            RABBITMQ_CTL_DIST_PORT_MAX=str(cluster.ctl_port_min + 8),
        )
        return env

    def write_files(self):
        os.makedirs(os.path.join(self.dir, "log"), exist_ok=True)
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as conf:
            conf.write(RABBITMQ_CONF.format(amqp_port=self.amqp_port,
                                            management_port=self.management_port))
        with open(os.path.join(self.dir, "advanced.config"), "w") as advanced:
            advanced.write("[].\n")

    def ctl(self, *args, timeout=90, check=True):
        """``rabbitmqctl -n <this node> ...`` with the cluster's HOME, cookie and epmd."""
        result = processes.run([os.path.join(RABBITMQ_BIN, "rabbitmqctl"), "-n", self.name,
                                *args], env=self.env(), timeout=timeout + 30)
        if check and result.returncode != 0:
            raise ClusterError(f"rabbitmqctl -n {self.name} {' '.join(args)}: "
                               f"{result.stdout}{result.stderr}")
        return result

    def launch(self):
        """Start this node's beam (detached); ``wait()`` for it."""
        result = processes.run([os.path.join(RABBITMQ_BIN, "rabbitmq-server"), "-detached"],
                               env=self.env(), timeout=60)
        if result.returncode != 0:
            raise ClusterError(f"{self.name} did not start: {result.stdout}{result.stderr}")

    def wait(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.pid_file):  # written by the detached server
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} wrote no pid file in {timeout}s")
            processes.eventlet.sleep(0.2)
        self.ctl("wait", "--timeout", str(timeout), self.pid_file, timeout=timeout)

    def start(self):
        self.launch()
        self.wait()

    def pid(self):
        """The pid of this node's beam, or None: from its pid file, and only if
        /proc/PID/environ says it is this node (its data directory)."""
        try:
            with open(self.pid_file) as pid_file:
                pid = int(pid_file.read().strip())
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (OSError, ValueError):
            return None
        if f"RABBITMQ_MNESIA_BASE={self.mnesia_base}".encode() not in variables:
            return None
        return pid

    def running(self):
        return self.pid() is not None

    def kill(self):
        """SIGKILL this node's beam (the crash of a machine, as far as RabbitMQ can tell)."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"{self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            try:  # our own child's zombie, when this process started it
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            processes.eventlet.sleep(0.05)
        os.unlink(self.pid_file)

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        result = self.ctl("stop", self.pid_file, timeout=60, check=False)
        if result.returncode != 0 and self.pid() == pid:
            os.kill(pid, signal.SIGKILL)

    def stop_app(self):
        """Stop RabbitMQ on this node, its Erlang VM staying up (``rabbitmqctl stop_app``)."""
        self.app_stopped = True
        self.ctl("stop_app")

    def start_app(self):
        self.ctl("start_app")
        self.app_stopped = False

    def management(self, method, path, body=None, timeout=10):
        """A call to this node's management API as guest; the decoded JSON answer (or None)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.management_port}/api/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Basic " +
                     base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            data = answer.read()
        return json.loads(data) if data else None


class Cluster:
    """Three nodes ``kn1``-``kn3@localhost`` joined into one cluster, everything under
    ``base_dir``. ``slot`` picks the ports (0: 5701-5703 ...)."""

    def __init__(self, base_dir, slot=0, size=SIZE):
        self.base_dir = os.path.abspath(base_dir)
        self.slot = slot
        self.home = os.path.join(self.base_dir, "home")
        self.epmd_port = EPMD_BASE + slot
        self.ctl_port_min = CTL_BASE + slot * 10
        self.nodes = [Node(self, index) for index in range(1, size + 1)]

    @classmethod
    def in_free_slot(cls, base_dir, first_slot=1, slots=20):
        """A cluster on the first set of ports nobody listens on (slot 0 is ``make cluster``'s)."""
        for slot in range(first_slot, first_slot + slots):
            cluster = cls(base_dir, slot)
            ports = [cluster.epmd_port] + [port for node in cluster.nodes for port in (
                node.amqp_port, node.management_port, node.dist_port)]
            if all(port_free(port) for port in ports):
                return cluster
        raise ClusterError("no free ports for a test cluster")

    @property
    def hosts(self):
        """``RABBITMQ_HOSTS`` for this cluster."""
        return ",".join(node.host for node in self.nodes)

    def amqp_uri(self, vhost="", nodes=None):
        return ";".join(f"pyamqp://guest:guest@{node.host}/{urllib.parse.quote(vhost, safe='')}"
                        for node in (nodes or self.nodes))

    def node(self, name):
        return next(node for node in self.nodes if node.name == name or
                    node.name.split("@")[0] == name)

    def _start_epmd(self):
        env = self.nodes[0].env()
        processes.run(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1",
                       "-daemon"], env=env, timeout=30, check=True)

    def _stop_epmd(self):
        processes.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.nodes[0].env(),
                      timeout=30)

    def start(self):
        """Write every file, start the nodes and join them into one cluster (~25 s)."""
        os.makedirs(self.home, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        if not os.path.exists(cookie):
            with open(cookie, "w") as cookie_file:
                cookie_file.write(secrets.token_hex(20).upper())
            os.chmod(cookie, 0o400)
        with open(os.path.join(self.base_dir, "rabbitmq-env.conf"), "w"):
            pass  # empty: the machine's /etc/rabbitmq/rabbitmq-env.conf names the shared node
        with open(os.path.join(self.base_dir, "enabled_plugins"), "w") as plugins:
            plugins.write("[rabbitmq_management].\n")
        for node in self.nodes:
            node.write_files()
        self._start_epmd()
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
            first.ctl("await_online_nodes", str(len(self.nodes)), "--timeout", "60")
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, remove=True):
        """Stop every node, then the cluster's epmd; with ``remove``, delete the directory.

        Kept (``make cluster-stop`` keeps nothing either, but could): the last node first, so
        that the one that stopped last starts first. Removed: all at once (~12 s, not ~40).
        """
        running = [node for node in reversed(self.nodes) if node.running()]
        if remove:
            stopping = [eventlet_spawn(node.stop) for node in running]
            for thread in stopping:
                thread.wait()
        else:
            for node in running:
                node.stop()
        self._stop_epmd()
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def await_online(self, count=None, timeout=60):
        count = count or len(self.nodes)
        for node in self.nodes:
            if node.running():
                node.ctl("await_online_nodes", str(count), "--timeout", str(timeout),
                         timeout=timeout)
                return
        raise ClusterError("no node of the cluster is running")

    def live_node(self):
        return next(node for node in self.nodes if node.running())

    def add_vhost(self, name):
        """A vhost for guest. Its default queue type stays classic: the suite declares what it
        needs (QUEUE_TYPE) itself."""
        node = self.live_node()
        node.management("PUT", f"vhosts/{urllib.parse.quote(name, safe='')}", {})
        node.management("PUT", f"permissions/{urllib.parse.quote(name, safe='')}/guest",
                        {"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self, name):
        try:
            self.live_node().management("DELETE", f"vhosts/{urllib.parse.quote(name, safe='')}",
                                        timeout=60)
        except (urllib.error.URLError, OSError, StopIteration):
            pass

    def leader(self, vhost, queue, timeout=30):
        """The node of quorum queue ``queue``'s leader (the management API knows it a moment
        after the queue is declared or a leader elected)."""
        deadline = time.monotonic() + timeout
        names = {node.name for node in self.nodes}
        while True:
            try:
                leader = (self.queues(vhost).get(queue) or {}).get("leader")
            except (urllib.error.URLError, OSError):
                leader = None
            if leader in names:
                return self.node(leader)
            if time.monotonic() > deadline:
                raise ClusterError(f"no leader of {queue} known within {timeout}s")
            processes.eventlet.sleep(0.2)

    def queues(self, vhost):
        """{queue name: {"type", "leader", "members", "messages"}} from the management API."""
        found = {}
        for queue in self.live_node().management(
                "GET", f"queues/{urllib.parse.quote(vhost, safe='')}"):
            found[queue["name"]] = {"type": queue.get("type"),
                                    "leader": queue.get("leader") or queue.get("node"),
                                    "members": queue.get("members") or [],
                                    "messages": queue.get("messages")}
        return found


def main(argv=None):
    parser = argparse.ArgumentParser(description="a three-node RabbitMQ cluster for trying "
                                     "KnowledgeNest's failover (ports 5701-5703)")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", default="var/cluster")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped the cluster in {cluster.base_dir}")
        return 0
    if any(node.running() for node in cluster.nodes):
        print(f"a cluster already runs from {cluster.base_dir} (make cluster-stop first)")
        return 1
    cluster.start()
    print(f"""\
three nodes up: {', '.join(node.name for node in cluster.nodes)} (data and logs in \
{cluster.base_dir})
  AMQP:           {cluster.hosts}
  management UI:  http://127.0.0.1:{cluster.nodes[0].management_port} (guest/guest)
  the suite on it: RABBITMQ_HOSTS={cluster.hosts} QUEUE_TYPE=quorum make run
  CLI:            HOME={cluster.home} ERL_EPMD_PORT={cluster.epmd_port} \
{RABBITMQ_BIN}/rabbitmqctl -n kn1@localhost cluster_status
  stop it:        make cluster-stop""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
