"""``docker compose up`` for real, without Docker: what the compose file says, process by process.

No Docker engine runs here, so this test does what the engine would do with docker-compose.yml:
for each service, in the order its ``depends_on`` conditions allow, it starts the service's
``command`` with its ``environment`` (interpolated from ``.env.example``, as after ``cp .env.example
.env``), from the installed wheel (tests/install/conftest.py), in the working directory the
Dockerfile sets with the config.yml it copies there, and waits for the equivalent of each
healthcheck (the application containers' own ``healthcheck.test`` commands, run as they are).
Then it drives the seed's story over HTTP.

Where one host must stand in for a compose network:
- container host names (``rabbitmq``, ``postgres``, ``mailcatcher``) resolve to 127.0.0.1, and their
  ports to the stand-ins' ports;
- the ports each container listens on inside its own network namespace (WEB_SERVER_ADDRESS,
  METRICS_PORT) get a free port each, since the processes share this one;
- ``rabbitmq`` is a throwaway vhost of the machine's broker (RABBITMQ_VHOST is the one variable
  added), with the compose file's broker users created for it and removed afterwards; a
  definitions file mounted into the rabbitmq container, if there is one, has its users and
  permissions applied to that vhost the same way;
- ``postgres`` is a throwaway PostgreSQL cluster (initdb into a temporary directory, run as the
  postgres OS user, on a free port), initialised as the postgres image does: POSTGRES_USER as its
  superuser with POSTGRES_PASSWORD (password authentication over TCP), its database, then every
  script mounted into /docker-entrypoint-initdb.d run as it is;
- ``mailcatcher`` is aiosmtpd on loopback.
"""
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
import uuid
from urllib.parse import quote, urlparse

import pytest
import requests
import yaml

from tests.install.conftest import ROOT
from tests.integration.test_notification import SmtpServer, free_port
from tests.support import processes
from tests.support.broker import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# this machine's PostgreSQL server programs (Debian's layout), the newest if there are several
POSTGRES_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda path: int(path.split("/")[-3]) if path.split("/")[-3].isdigit()
                       else 0)
POSTGRES_BIN = os.path.dirname(POSTGRES_BINS[-1]) if POSTGRES_BINS else None
APP_IMAGE = "knowledge-nest:latest"
START_TIMEOUT = 240  # seconds for the whole deployment to come up on a busy 2-core machine
PASSWORD = "correct horse battery staple"


# --- the compose file, interpolated -----------------------------------------------------------

def read_env_file(path):
    values = {}
    with open(path) as env_file:
        for line in env_file:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


INTERPOLATION = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def interpolate(value, env):
    """The Compose Specification's interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        dollar, name, operator, argument = match.groups()
        if dollar:
            return "$"
        present = name in env and (env[name] != "" or operator in ("-", "?"))
        if operator in (":-", "-"):
            return env[name] if present else argument
        if operator in (":?", "?") and not present:
            raise AssertionError(f"compose would refuse to start: {name}: {argument}")
        return env.get(name, "")

    return INTERPOLATION.sub(substitute, value)


def dockerfile_workdir():
    """The final stage's WORKDIR, and that it copies config.yml there."""
    with open(os.path.join(ROOT, "Dockerfile")) as dockerfile:
        final_stage = dockerfile.read().rsplit("\nFROM ", 1)[-1]
    [workdir] = re.findall(r"^WORKDIR (\S+)", final_stage, re.M)[-1:]
    assert re.search(r"^COPY config\.yml \./$", final_stage, re.M), "config.yml in the workdir"
    return workdir


# --- the stand-ins for the infrastructure containers -------------------------------------------

class PostgresCluster:
    """A throwaway cluster, initialised like the postgres image initialises its volume."""

    def __init__(self, user, password):
        assert POSTGRES_BIN, "needs PostgreSQL's server programs (/usr/lib/postgresql/*/bin/initdb)"
        self.user, self.password = user, password
        self.directory = tempfile.mkdtemp(prefix="kn_compose_pg_")  # not under pytest's 0700 tmp
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        shutil.chown(self.directory, "postgres", "postgres")

    def as_postgres(self, *command, **kwargs):
        result = processes.run(["runuser", "-u", "postgres", "--", *command], timeout=180,
                               cwd=self.directory, **kwargs)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        return result

    def psql(self, database, *arguments):
        return self.as_postgres(f"{POSTGRES_BIN}/psql", "-v", "ON_ERROR_STOP=1", "-h",
                                self.directory, "-p", str(self.port), "-U", self.user,
                                "-d", database, *arguments)

    def start(self, init_scripts):
        pwfile = os.path.join(self.directory, "pwfile")
        with open(pwfile, "w") as out:
            out.write(self.password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        self.as_postgres(f"{POSTGRES_BIN}/initdb", "-D", self.data, "-U", self.user,
                         f"--pwfile={pwfile}", "--auth-local=trust",
                         "--auth-host=scram-sha-256", "-E", "UTF8")
        os.unlink(pwfile)
        self.as_postgres(f"{POSTGRES_BIN}/pg_ctl", "-D", self.data, "-l",
                         os.path.join(self.directory, "log"), "-w", "-o",
                         f"-c listen_addresses=127.0.0.1 -p {self.port} "
                         f"-c unix_socket_directories={self.directory}", "start")
        # the image's entrypoint: POSTGRES_DB (default: POSTGRES_USER), then the init scripts
        self.psql("postgres", "-c", f'CREATE DATABASE "{self.user}"')
        for script in init_scripts:
            copy = os.path.join(self.directory, os.path.basename(script))
            shutil.copyfile(script, copy)
            shutil.chown(copy, "postgres", "postgres")
            self.psql(self.user, "-f", copy)

    def ready(self):  # the compose healthcheck: pg_isready -U $POSTGRES_USER
        return processes.run([f"{POSTGRES_BIN}/pg_isready", "-h", "127.0.0.1", "-p",
                              str(self.port), "-U", self.user], timeout=30).returncode == 0

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            processes.run(["runuser", "-u", "postgres", "--", f"{POSTGRES_BIN}/pg_ctl", "-D",
                           self.data, "-m", "immediate", "stop"], timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)


class BrokerVhost:
    """The compose file's broker users on this test's vhost of the machine's broker."""

    def __init__(self, api_uri, vhost):
        api = urlparse(api_uri)
        self.base = f"{api.scheme}://{api.hostname}:{api.port or 15672}/api"
        self.auth = (api.username, api.password)
        self.vhost = vhost
        self.created = []

    def call(self, method, path, **kwargs):
        response = requests.request(method, self.base + path, auth=self.auth, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def add_user(self, name, password=None, password_hash=None, hashing_algorithm=None, tags=""):
        if requests.get(f"{self.base}/users/{quote(name, safe='')}", auth=self.auth,
                        timeout=30).status_code == 200:
            raise AssertionError(f"broker user {name} exists already: not ours to change")
        body = {"tags": tags}
        if password_hash is not None:
            body.update(password_hash=password_hash,
                        hashing_algorithm=hashing_algorithm or "rabbit_password_hashing_sha256")
        else:
            body["password"] = password
        self.call("PUT", f"/users/{quote(name, safe='')}", json=body)
        self.created.append(name)

    def permit(self, name, configure=".*", write=".*", read=".*"):
        self.call("PUT", f"/permissions/{quote(self.vhost, safe='')}/{quote(name, safe='')}",
                  json={"configure": configure, "write": write, "read": read})

    def ready(self):
        """The rabbitmq healthcheck's equivalent (rabbitmq-diagnostics ping): the broker
        answers on its AMQP port, and its vhost is there."""
        try:
            socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
        except OSError:
            return False
        return requests.get(f"{self.base}/vhosts/{quote(self.vhost, safe='')}", auth=self.auth,
                            timeout=30).status_code == 200

    def remove_users(self):
        for name in self.created:
            requests.delete(f"{self.base}/users/{quote(name, safe='')}", auth=self.auth,
                            timeout=30)


def definitions_file(rabbitmq):
    """A RabbitMQ definitions file mounted into the rabbitmq container, if any: its path here."""
    for volume in rabbitmq.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith(".") and source.endswith(".json"):
            return os.path.join(ROOT, source)
    return None


# --- one application container as a process ----------------------------------------------------

class Container:
    def __init__(self, name, spec, env, workdir, logdir):
        self.name, self.spec, self.env, self.workdir = name, spec, env, workdir
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.process = None

    def start(self):
        command = self.spec["command"]
        executable = shutil.which(command[0], path=self.env["PATH"])
        with open(self.log_path, "wb") as log:
            self.process = processes.Popen([executable, *command[1:]], cwd=self.workdir,
                                           env=self.env, stdout=log, stderr=processes.STDOUT)

    def exited(self):
        return self.process is not None and self.process.poll() is not None

    def healthy(self):
        test = self.spec["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            command = ["/bin/sh", "-c", test[1]]
        else:
            assert test[0] == "CMD", test
            command = [shutil.which(test[1], path=self.env["PATH"]), *test[2:]]
        return processes.run(command, cwd=self.workdir, env=self.env,
                             timeout=30).returncode == 0

    def output(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # docker stop

    def wait_stopped(self):
        if self.process is not None:
            try:
                processes.wait(self.process, 30)
            except processes.TimeoutExpired:
                self.process.kill()
                processes.wait(self.process, 30)


# --- the deployment --------------------------------------------------------------------------

@pytest.fixture
def deployment(installed, rabbit_config, request, tmp_path):
    with open(os.path.join(ROOT, "docker-compose.yml")) as compose_file:
        raw = yaml.safe_load(compose_file)
    suffix = uuid.uuid4().hex[:10]
    broker_users = {}  # the compose file's (and definitions file's) user names -> ours

    # as after `cp .env.example .env` and changing every value in it, as .env.example says;
    # broker users get names of this test's own (the broker is shared), and broker passwords stay
    # if a definitions file holds their hashes
    definitions = definitions_file(raw["services"]["rabbitmq"])
    dotenv = read_env_file(os.path.join(ROOT, ".env.example"))
    for key in dotenv:
        if re.search(r"RABBITMQ_(DEFAULT_)?USER$", key):
            broker_users[dotenv[key]] = f"kn_compose_{suffix}_{dotenv[key]}"
            dotenv[key] = broker_users[dotenv[key]]
        elif re.search(r"(PASS|PASSWORD|SECRET)$", key) and not (
                definitions and re.search(r"RABBITMQ_(DEFAULT_)?PASS", key)):
            dotenv[key] = secrets.token_urlsafe(36)
    compose = interpolate({name: spec for name, spec in raw["services"].items()}, dotenv)

    vhost = urlparse(rabbit_config["AMQP_URI"]).path.lstrip("/")
    broker = BrokerVhost(request.config.getoption("RABBIT_API_URI"), vhost)
    mail = SmtpServer(tmp_path, free_port())
    postgres = PostgresCluster(compose["postgres"]["environment"]["POSTGRES_USER"],
                               compose["postgres"]["environment"]["POSTGRES_PASSWORD"])
    containers = []
    try:
        # rabbitmq: its default user, or (RabbitMQ creates no default user when it imports
        # definitions at boot) what a mounted definitions file declares
        rabbitmq_env = compose["rabbitmq"].get("environment", {})
        if rabbitmq_env.get("RABBITMQ_DEFAULT_USER") and not definitions:
            broker.add_user(rabbitmq_env["RABBITMQ_DEFAULT_USER"],
                            rabbitmq_env["RABBITMQ_DEFAULT_PASS"], tags="administrator")
            broker.permit(rabbitmq_env["RABBITMQ_DEFAULT_USER"])
        if definitions:
            with open(definitions) as definitions_json:
                declared = json.load(definitions_json)
            for user in declared.get("users", []):
                ours = broker_users.setdefault(user["name"], f"kn_compose_{suffix}_{user['name']}")
                broker.add_user(ours, password=user.get("password"),
                                password_hash=user.get("password_hash"),
                                hashing_algorithm=user.get("hashing_algorithm"),
                                tags=user.get("tags", "") if isinstance(user.get("tags", ""), str)
                                else ",".join(user["tags"]))
            for permission in declared.get("permissions", []):
                broker.permit(broker_users.get(permission["user"], permission["user"]),
                              permission["configure"], permission["write"], permission["read"])
        # postgres and the mail catcher
        init_scripts = sorted(
            (target, os.path.join(ROOT, source)) for source, target, *_ in
            (volume.split(":") for volume in raw["services"]["postgres"]["volumes"])
            if target.startswith("/docker-entrypoint-initdb.d/"))
        postgres.start([script for _, script in init_scripts])
        mail.start()
        published = {("rabbitmq", "5672"): ("127.0.0.1", "5672"),
                     ("postgres", "5432"): ("127.0.0.1", str(postgres.port)),
                     ("mailcatcher", "1025"): ("127.0.0.1", str(mail.port))}
        infrastructure_ready = {
            "rabbitmq": broker.ready,
            "postgres": postgres.ready,
            "mailcatcher": lambda: True,
        }

        workdir_in_image = dockerfile_workdir()
        for name, spec in compose.items():
            if spec.get("image") != APP_IMAGE:
                assert name in infrastructure_ready, f"{name}: no stand-in for {spec.get('image')}"
                continue
            workdir = tmp_path / "containers" / name / workdir_in_image.lstrip("/")
            (workdir / "var").mkdir(parents=True)
            shutil.copyfile(os.path.join(ROOT, "config.yml"), workdir / "config.yml")
            env = dict(map_to_host(spec.get("environment", {}), published, broker_users),
                       RABBITMQ_VHOST=vhost, PATH=installed.bin + ":/usr/bin:/bin",
                       HOME=str(workdir), LANG="C.UTF-8")
            if "WEB_SERVER_ADDRESS" in env:
                env["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
            if env.get("METRICS_PORT"):
                env["METRICS_PORT"] = str(free_port())
            containers.append(Container(name, spec, env, str(workdir), str(tmp_path)))

        bring_up(compose, {container.name: container for container in containers},
                 infrastructure_ready)
        [gateway] = [container for container in containers if container.name == "gateway"]
        yield {"base": "http://" + gateway.env["WEB_SERVER_ADDRESS"], "mail": mail,
               "containers": containers}
    finally:
        for container in reversed(containers):
            container.terminate()
        for container in containers:
            container.wait_stopped()
        for container in containers:  # pytest shows it only when the test failed
            if container.process is not None:
                print(f"----- {container.name} -----\n{container.output()[-4000:]}")
        mail.stop()
        postgres.stop()
        broker.remove_users()


def map_to_host(environment, published, broker_users):
    """Container host names and ports to where their stand-ins listen on this host."""
    env = {key: str(value) for key, value in environment.items()}
    for key, value in list(env.items()):
        for (host, port), (new_host, new_port) in published.items():
            if value == host:  # X_HOST: host, with X_PORT beside it
                env[key] = new_host
                port_key = key[:-len("HOST")] + "PORT"
                if key.endswith("HOST") and env.get(port_key) == port:
                    env[port_key] = new_port
            elif f"@{host}:{port}/" in value:  # a URL
                env[key] = value.replace(f"@{host}:{port}/", f"@{new_host}:{new_port}/")
        if re.search(r"RABBITMQ_USER$", key) and value in broker_users:
            env[key] = broker_users[value]
    # config.yml names the owners' broker users by default (EVENT_PUBLISHERS): ours are renamed
    with open(os.path.join(ROOT, "config.yml")) as config_file:
        for key, default in re.findall(r"\$\{([A-Z_]*RABBITMQ_USER):([^}]*)\}",
                                       config_file.read()):
            if key not in env and default in broker_users:
                env[key] = broker_users[default]
    return env


def bring_up(compose, containers, infrastructure_ready):
    """Start each container once its depends_on conditions hold, as compose does."""
    started, healthy, completed = set(), set(), set()
    began = time.monotonic()
    deadline = began + START_TIMEOUT

    def event(name, what):  # shown with the logs when the test fails
        print(f"{time.monotonic() - began:6.1f}s {name} {what}")

    def holds(dependency, condition):
        if dependency in infrastructure_ready:
            return condition == "service_started" or infrastructure_ready[dependency]()
        return {"service_started": started, "service_healthy": healthy,
                "service_completed_successfully": completed}[condition].__contains__(dependency)

    while len(healthy | completed) < len(containers):
        assert time.monotonic() < deadline, (
            f"not up within {START_TIMEOUT}s: "
            f"{sorted(set(containers) - healthy - completed)}")
        for name, container in containers.items():
            spec = compose[name]
            if name not in started and all(
                    holds(dependency, (condition or {}).get("condition", "service_started"))
                    for dependency, condition in _depends_on(spec).items()):
                container.start()
                started.add(name)
                event(name, "started")
            elif name in started and name not in healthy | completed:
                if spec.get("restart") == "no":  # a one-shot: it must finish, and succeed
                    if container.exited():
                        assert container.process.returncode == 0, (
                            f"{name} exited {container.process.returncode}:\n{container.output()}")
                        completed.add(name)
                        event(name, "completed")
                else:
                    assert not container.exited(), f"{name} exited:\n{container.output()}"
                    if container.healthy():
                        healthy.add(name)
                        event(name, "healthy")
        time.sleep(0.5)


def _depends_on(spec):
    depends_on = spec.get("depends_on", {})
    return {name: None for name in depends_on} if isinstance(depends_on, list) else depends_on


# --- the seed's story -------------------------------------------------------------------------

def test_compose_deployment_runs_the_seeds_story(deployment):
    base, mail = deployment["base"], deployment["mail"]
    assert requests.get(base + "/health/live", timeout=30).json() == {"status": "ok"}
    health = requests.get(base + "/health", timeout=60)
    assert health.status_code == 200, health.text  # every service and database answers

    def register(email, name, role):
        response = requests.post(base + "/api/auth/register", timeout=60, json={
            "email": email, "password": PASSWORD, "name": name, "role": role})
        assert response.status_code == 201, response.text
        login = requests.post(base + "/api/auth/login", timeout=60,
                              json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return {"Authorization": "Bearer " + login.json()["access_token"]}

    instructor = register("ada@example.com", "Ada Instructor", "instructor")
    student = register("sam@example.com", "Sam Student", "student")
    response = requests.post(base + "/api/courses", headers=instructor, timeout=60, json={
        "title": "Python Fundamentals", "description": "From zero"})
    assert response.status_code == 201, response.text
    course_id = response.json()["id"]
    response = requests.post(f"{base}/api/courses/{course_id}/enroll", headers=student, timeout=60)
    assert response.status_code == 201, response.text
    response = requests.post(f"{base}/api/courses/{course_id}/reviews", headers=student,
                             timeout=60, json={"rating": 4, "comment": "Great"})
    assert response.status_code == 201, response.text

    def notifications(headers):
        response = requests.get(base + "/api/users/me/notifications", headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        return sorted(item["kind"] for item in response.json()["items"])

    assert wait_until(lambda: notifications(student) == ["enrollment_confirmed", "welcome"],
                      timeout=60, interval=0.5, message="the student's notifications")
    assert wait_until(
        lambda: notifications(instructor) == ["course_live", "new_review", "welcome"],
        timeout=60, interval=0.5, message="the instructor's notifications")
    received = mail.wait_for(5, timeout=60)
    assert sorted(tuple(message["rcpt_tos"]) for message in received) == sorted(
        [("ada@example.com",)] * 3 + [("sam@example.com",)] * 2)

    def rated():
        course = requests.get(f"{base}/api/courses/{course_id}", timeout=60).json()
        return course["rating_count"] == 1 and course

    course = wait_until(rated, timeout=60, interval=0.5, message="the course's rating")
    assert (course["rating_average"], course["enrollment_count"]) == (4.0, 1)
