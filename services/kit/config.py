"""Load config.yml the way `nameko run` does: YAML with ${VAR:default} from the environment."""
import yaml
from nameko.cli.main import setup_yaml_parser

from services.kit.amqp import apply_broker_hosts

DEFAULT_CONFIG_PATH = "config.yml"


def load_config(path=DEFAULT_CONFIG_PATH):
    setup_yaml_parser()  # registers nameko's !env_var resolver; idempotent
    with open(path) as config_file:
        return apply_broker_hosts(yaml.safe_load(config_file))
