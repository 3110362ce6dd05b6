"""deploy/kubernetes/ (the kustomize base) validated offline: rendered (``kubectl kustomize`` when
it is installed, else the files its kustomization lists), every object checked against the
Kubernetes API schemas kubernetes-validate bundles, and read against the code as
tests/unit/test_compose.py reads docker-compose.yml: a Deployment per service running the same
command as its compose container, the migration Job, the gateway's Service, probes that work,
resource requests, non-root."""
import http.server
import os
import shutil
import subprocess
import sys
import threading

import kubernetes_validate
import pytest
import yaml

from tests.unit.test_compose import DEFAULTS_FINE_IN_CONTAINERS, ROOT, read, service_modules

BASE = os.path.join(ROOT, "deploy", "kubernetes")


def render():
    kubectl = shutil.which("kubectl")
    if kubectl:
        text = subprocess.run([kubectl, "kustomize", BASE], capture_output=True, text=True,
                              check=True, timeout=120).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]
    with open(os.path.join(BASE, "kustomization.yaml")) as kustomization:
        resources = yaml.safe_load(kustomization)["resources"]
    docs = []
    for resource in resources:
        with open(os.path.join(BASE, resource)) as resource_file:
            docs += [doc for doc in yaml.safe_load_all(resource_file) if doc]
    return docs


@pytest.fixture(scope="module")
def objects():
    return render()


def of_kind(objects, kind):
    return {doc["metadata"]["name"]: doc for doc in objects if doc["kind"] == kind}


def test_every_object_is_valid_against_the_kubernetes_schemas(objects):
    version = kubernetes_validate.latest_version()
    assert objects
    for doc in objects:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at "
                        f"{'.'.join(map(str, exc.path))}")


def containers_of(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def test_a_deployment_per_service_with_its_compose_command(objects):
    compose = yaml.safe_load(read("docker-compose.yml"))
    deployments = of_kind(objects, "Deployment")
    assert set(deployments) == set(service_modules())
    for name, deployment in deployments.items():
        [container] = containers_of(deployment)
        assert container["command"] == compose["services"][name]["command"]
        assert container["image"].startswith("knowledge-nest")


def test_the_migration_job_migrates_every_database(objects):
    [job] = of_kind(objects, "Job").values()
    [container] = containers_of(job)
    assert container["command"] == ["knowledge-nest", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_the_gateway_service_reaches_the_gateways_http_port(objects):
    service = of_kind(objects, "Service")["gateway"]
    gateway = of_kind(objects, "Deployment")["gateway"]
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [container] = containers_of(gateway)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http"}
    config = of_kind(objects, "ConfigMap")["knowledge-nest-config"]["data"]
    assert config["WEB_SERVER_ADDRESS"].endswith(f":{ports['http']}")
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health/live", "port": "http"}


def test_every_pod_has_probes_requests_and_runs_as_non_root(objects):
    for doc in objects:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            name = f"{doc['kind']} {doc['metadata']['name']}"
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            if doc["kind"] == "Deployment":
                assert "livenessProbe" in container and "readinessProbe" in container, name


def test_every_variable_the_services_read_is_set_and_credentials_are_in_the_secret(objects):
    import re
    settings = "\n".join(line for line in read("config.yml").splitlines()
                         if not line.lstrip().startswith("#"))
    read_by_services = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", settings))
    config = of_kind(objects, "ConfigMap")["knowledge-nest-config"]["data"]
    secret = of_kind(objects, "Secret")["knowledge-nest"]
    missing = read_by_services - set(config) - set(secret["stringData"]) \
        - DEFAULTS_FINE_IN_CONTAINERS
    assert not missing, f"set neither in the ConfigMap nor the Secret: {sorted(missing)}"
    for credential in ("JWT_SECRET", "RABBITMQ_PASS", "AUTH_DATABASE_URL", "SMTP_PASSWORD"):
        assert credential in secret["stringData"] and credential not in config
    # example values only, and marked so
    assert secret["metadata"]["annotations"]["knowledge-nest/example-values"] == "true"
    assert all("EXAMPLE-ONLY" in value for value in secret["stringData"].values())
    assert config["ENVIRONMENT"] == "production"
    assert len(secret["stringData"]["JWT_SECRET"].encode()) >= 32  # production refuses shorter
    for doc in of_kind(objects, "Deployment").values():
        [container] = containers_of(doc)
        assert container["envFrom"] == [{"configMapRef": {"name": "knowledge-nest-config"}},
                                        {"secretRef": {"name": "knowledge-nest"}}]


class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/metrics" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_services_exec_probe_passes_against_a_live_metrics_port_and_fails_without(objects):
    compose = yaml.safe_load(read("docker-compose.yml"))
    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        live_port = server.server_address[1]
        for name, deployment in of_kind(objects, "Deployment").items():
            if name == "gateway":
                continue
            [container] = containers_of(deployment)
            command = container["livenessProbe"]["exec"]["command"]
            assert command == compose["services"][name]["healthcheck"]["test"][1:]  # one check
            assert command[0] == "python"
            python = [sys.executable, *command[1:]]
            env = dict(os.environ, METRICS_PORT=str(live_port))
            assert subprocess.run(python, env=env, timeout=30).returncode == 0
        env = dict(os.environ, METRICS_PORT=str(live_port))
        server.shutdown()
        server.server_close()
        assert subprocess.run(python, env=env, timeout=30, capture_output=True).returncode != 0
    finally:
        server.server_close()
