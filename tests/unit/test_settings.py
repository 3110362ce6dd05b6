"""config.yml against the declared settings (services/kit/settings.py and every package's
settings.py), and the reader's parsing and errors."""
import glob
import importlib
import os
import re
import sys

import pytest
import yaml
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from services.kit.config import load_config
from services.kit import settings as kit_settings
from services.kit.settings import (
    AMQP_URI, EVENT_OPERATORS, EVENT_RETRY_DELAYS, EVENT_TTL, QUEUE_TYPE, REQUIRED, SUBSCRIPTIONS,
    Setting, SettingError, flag, integer, mapping,
)
from tests.unit.test_compose import ROOT, read, service_modules

# a whole value "${VAR}" or "${VAR:default}", as nameko's env_var resolver reads it
WHOLE_VARIABLE = re.compile(r"^\$\{([^}:\s]+):?([^}]*)\}$")


def settings_modules():
    paths = sorted(glob.glob(os.path.join(ROOT, "services", "*", "settings.py"))
                   + glob.glob(os.path.join(ROOT, "gateway", "settings.py")))
    return [importlib.import_module(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
            for path in paths]


def declared():
    """{key: Setting} of every settings module; a key declared twice fails."""
    found = {}
    for module in settings_modules():
        for value in vars(module).values():
            if isinstance(value, Setting) and found.get(value.key) is not value:
                assert value.key not in found, f"{value.key} is declared twice"
                found[value.key] = value
    return found


def raw_config():
    """config.yml's top-level values as written (strings, ${VAR:default} unresolved)."""
    return yaml.load(read("config.yml"), Loader=yaml.BaseLoader)


def variables():
    """Every environment variable config.yml reads (its comments aside)."""
    settings = "\n".join(line for line in read("config.yml").splitlines()
                         if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", settings))


def test_every_package_with_a_service_declares_its_settings_in_one_module():
    modules = {module.__name__ for module in settings_modules()}
    assert {"services.kit.settings", "services.auth.settings", "services.notification.settings",
            "gateway.settings"} <= modules


def test_every_declared_setting_is_one_the_container_checks():
    assert set(declared()) <= set(kit_settings.DECLARED)


def test_every_key_in_config_yml_is_declared_and_every_declared_key_is_in_it():
    keys, settings = set(raw_config()), declared()
    assert not keys - set(settings), f"in config.yml, declared nowhere: {sorted(keys - set(settings))}"
    assert not set(settings) - keys, f"declared, not in config.yml: {sorted(set(settings) - keys)}"


def test_config_yml_defaults_are_the_declared_defaults():
    settings, compared = declared(), []
    for key, raw in raw_config().items():
        match = WHOLE_VARIABLE.match(raw) if isinstance(raw, str) else None
        if match is None:
            continue  # a literal value, or a composite of several variables (AMQP_URI, DB_URIS)
        setting = settings[key]
        # nameko YAML-parses the default ("" is None), then the setting reads that
        from_config = setting.read({key: yaml.safe_load(match.group(2))})
        assert from_config == setting.default, (key, match.group(2), setting.default)
        compared.append(key)
    assert len(compared) > 50


def test_every_setting_reads_config_yml_as_it_resolves_with_an_empty_environment(monkeypatch):
    for name in variables():
        monkeypatch.delenv(name, raising=False)
    config = load_config(os.path.join(ROOT, "config.yml"))
    values = {key: setting.read(config) for key, setting in declared().items()}
    assert values["AMQP_URI"] == "pyamqp://guest:guest@localhost:5672/"
    assert values["EVENT_RETRY_DELAYS"] == (1.0, 5.0, 30.0)
    assert "course.update_rating" in values["SUBSCRIPTIONS"]
    assert values["EVENT_OWNERS"]["user.registered"] == "auth"
    assert values["EVENT_TTL"] == dict.fromkeys(
        ("user.registered", "course.created", "course.enrolled", "review.created"))
    assert values["HEARTBEAT"] == 15 and values["max_workers"] == 10
    assert values["AMQP_SSL"] is None and values["METRICS_PORT"] is None


def test_compose_and_kubernetes_set_only_variables_config_yml_reads():
    known = variables()
    compose = yaml.safe_load(read("docker-compose.yml"))
    for name in service_modules():
        for service in (name, f"migrate-{name}"):
            if service in compose["services"]:
                unknown = set(compose["services"][service]["environment"]) - known
                assert not unknown, f"compose's {service} sets {sorted(unknown)}"
    for path in ("deploy/kubernetes/config.yaml", "deploy/kubernetes/secret.example.yaml"):
        for doc in yaml.safe_load_all(read(path)):
            unknown = set(doc.get("data") or doc.get("stringData") or {}) - known
            assert not unknown, f"{path} sets {sorted(unknown)}"


# the reader -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def declared_by_the_tests_only_while_they_run(monkeypatch):
    settings_modules()  # the real ones are declared for good
    monkeypatch.setattr(kit_settings, "DECLARED", dict(kit_settings.DECLARED))


def number():
    return Setting("TEST_NUMBER", integer, 7, "a test setting")


@pytest.mark.parametrize("value, expected", [
    (5, 5), ("5", 5), (" 12 ", 12), (5.0, 5), (None, 7), ("", 7), ("  ", 7),
])
def test_an_integer_from_yaml_or_the_environment(value, expected):
    assert number().read({"TEST_NUMBER": value}) == expected


@pytest.mark.parametrize("value", ["five", "5.5", 5.5, True, [5]])
def test_an_unreadable_value_names_its_key(value):
    with pytest.raises(SettingError, match=r"^TEST_NUMBER: cannot read"):
        number().read({"TEST_NUMBER": value})


def test_absent_and_empty_read_as_the_default_unless_declared_otherwise():
    assert number().read({}) == number().read(None) == 7
    mode = Setting("TEST_MODE", str, "development", "test", empty="")
    assert mode.read({}) == "development"
    assert mode.read({"TEST_MODE": None}) == mode.read({"TEST_MODE": ""}) == ""


def test_a_required_setting_unset_is_an_error():
    assert AMQP_URI.default is REQUIRED
    for config in ({}, {"AMQP_URI": None}, {"AMQP_URI": ""}):
        with pytest.raises(SettingError, match="AMQP_URI is not set"):
            AMQP_URI.read(config)


def test_a_setting_error_is_a_configuration_error_and_a_value_error():
    assert issubclass(SettingError, ConfigurationError) and issubclass(SettingError, ValueError)


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("true", True), ("False", False), (" on ", True), ("0", False),
    (1, True), ("yes", True), ("no", False),
])
def test_flags(value, expected):
    assert flag(value) is expected


def test_a_flag_that_is_neither_is_refused():
    with pytest.raises(ValueError):
        flag("maybe")


@pytest.mark.parametrize("value, expected", [
    ([1, 5, 30], (1.0, 5.0, 30.0)), ("1,5,30", (1.0, 5.0, 30.0)), ("[0.5, 2]", (0.5, 2.0)),
    (" 1, 10 ", (1.0, 10.0)), ([], ()), ("[]", ()), (None, (1.0, 5.0, 30.0)),
])
def test_a_list_of_seconds(value, expected):
    assert EVENT_RETRY_DELAYS.read({"EVENT_RETRY_DELAYS": value}) == expected


def test_a_list_of_names():
    assert EVENT_OPERATORS.read({"EVENT_OPERATORS": "ops, replayer"}) == ("ops", "replayer")
    assert EVENT_OPERATORS.read({"EVENT_OPERATORS": ["ops"]}) == ("ops",)
    assert EVENT_OPERATORS.read({"EVENT_OPERATORS": []}) == ()


def test_a_mapping_and_its_default_is_never_shared():
    assert EVENT_TTL.read({"EVENT_TTL": {"a.b": 1}}) == {"a.b": 1}
    EVENT_TTL.read({})["x"] = 1
    assert EVENT_TTL.read({}) == {}
    with pytest.raises(SettingError, match="EVENT_TTL"):
        EVENT_TTL.read({"EVENT_TTL": "a.b"})
    with pytest.raises(ValueError):
        mapping([1])


def test_an_import_path_or_the_mapping_itself():
    from contracts.subscriptions import SUBSCRIPTIONS as table
    assert SUBSCRIPTIONS.read({"SUBSCRIPTIONS": "contracts.subscriptions:SUBSCRIPTIONS"}) == table
    assert SUBSCRIPTIONS.read({"SUBSCRIPTIONS": {"q": ["k"]}}) == {"q": ["k"]}
    for path in ("contracts.nowhere:SUBSCRIPTIONS", "contracts.subscriptions:NOTHING"):
        with pytest.raises(SettingError, match="SUBSCRIPTIONS"):
            SUBSCRIPTIONS.read({"SUBSCRIPTIONS": path})


def test_one_of_its_choices():
    assert QUEUE_TYPE.read({"QUEUE_TYPE": " Quorum "}) == "quorum"
    assert QUEUE_TYPE.read({}) == "classic"
    with pytest.raises(SettingError, match="QUEUE_TYPE.*classic, quorum"):
        QUEUE_TYPE.read({"QUEUE_TYPE": "stream"})


class Started(DependencyProvider):
    started = False

    def start(self):
        Started.started = True


class Service:
    name = "reader"
    started = Started()


def test_nameko_run_refuses_to_start_over_an_unreadable_setting(monkeypatch):
    """Any declared setting, also one read only per call (RPC_TIMEOUT), before any extension
    starts."""
    from services.kit.logs import LoggingServiceContainer

    config = {"AMQP_URI": "memory://", "RPC_TIMEOUT": "soon"}
    with pytest.raises(ConfigurationError, match="RPC_TIMEOUT"):  # not under nameko run
        LoggingServiceContainer(Service, dict(config)).start()
    monkeypatch.setattr(sys, "argv", [os.path.join(sys.prefix, "bin", "nameko"), "run"])
    with pytest.raises(SystemExit, match=r"^Error: RPC_TIMEOUT: cannot read 'soon'"):
        LoggingServiceContainer(Service, dict(config)).start()
    assert not Started.started
    monkeypatch.setattr(sys, "argv", ["pytest"])
    container = LoggingServiceContainer(Service, {"AMQP_URI": "memory://"})
    container.start()
    assert Started.started
    container.stop()
