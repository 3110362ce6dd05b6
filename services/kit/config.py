"""Load config.yml the way `nameko run` does: YAML with ${VAR:default} from the environment."""
import os
import sys

import yaml
from nameko.cli.main import setup_yaml_parser
from nameko.exceptions import ConfigurationError

from services.kit.amqp import apply_broker_hosts

DEFAULT_CONFIG_PATH = "config.yml"


def load_config(path=DEFAULT_CONFIG_PATH):
    setup_yaml_parser()  # registers nameko's !env_var resolver; idempotent
    with open(path) as config_file:
        return apply_broker_hosts(yaml.safe_load(config_file))


def _under_nameko_run():
    program = sys.argv[0] if sys.argv else ""
    return ((os.path.basename(program) == "nameko" or program.endswith("nameko/__main__.py"))
            and sys.argv[1:2] == ["run"])


def refuse_to_start(message):
    """Stop a service from starting over an unsafe or unknown setting.

    ``nameko run`` prints a ConfigurationError raised while starting and then exits with status
    0, after eventlet printed its traceback: a supervisor or ``docker compose`` would take that for
    a clean stop. Under ``nameko run`` this raises SystemExit instead, which ends the process
    with status 1 and this one line on stderr; anywhere else (tests, a ServiceRunner of one's
    own) a ConfigurationError, for the caller to handle.
    """
    if _under_nameko_run():
        raise SystemExit(f"Error: {message}")
    raise ConfigurationError(message)
