"""``knowledge-nest``: operations commands. Run ``knowledge-nest --help``."""
import argparse
import json
import sys

from services.kit.config import DEFAULT_CONFIG_PATH, load_config


def cmd_declare(args, config):
    from services.kit.shell import declare
    declare(config)
    print("declared the knowledge_nest_events topology")


def cmd_publish(args, config):
    from services.kit.shell import publish_event
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise SystemExit(f"error: DATA is not JSON: {exc}")
    print(publish_event(config, args.event_type, data, source=args.source))


def services_with_databases(config, only=None):
    from services.kit.db import database_uri
    names = [key.split(":")[0] for key in config.get("DB_URIS", {})]
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"error: no database configured for {', '.join(sorted(unknown))}")
        names = [name for name in names if name in only]
    return [(name, database_uri(config, name)) for name in names]


def cmd_migrate(args, config):
    from services.kit import migrations
    for service_name, db_uri in services_with_databases(config, args.services):
        if not migrations.has_migrations(service_name):
            continue  # configured, but not written yet
        migrations.upgrade(service_name, db_uri)
        print(f"{service_name}: database at head")


def cmd_makemigration(args, config):
    from services.kit import migrations
    [(service_name, db_uri)] = services_with_databases(config, [args.service])
    migrations.upgrade(service_name, db_uri)
    migrations.make_revision(service_name, db_uri, args.message)


def build_parser():
    parser = argparse.ArgumentParser(prog="knowledge-nest", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH,
                        help="nameko config file (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    declare = commands.add_parser("declare", help="declare the exchanges and every queue")
    declare.set_defaults(run=cmd_declare)

    migrate = commands.add_parser("migrate", help="upgrade every service's database to head")
    migrate.add_argument("services", nargs="*", help="only these services (default: all)")
    migrate.set_defaults(run=cmd_migrate)

    makemigration = commands.add_parser(
        "makemigration", help="write a migration from the difference between models and database")
    makemigration.add_argument("service")
    makemigration.add_argument("-m", "--message", required=True)
    makemigration.set_defaults(run=cmd_makemigration)

    publish = commands.add_parser("publish", help="publish one event, confirmed")
    publish.add_argument("event_type", help="e.g. user.registered")
    publish.add_argument("data", help='the event data as JSON, e.g. \'{"user_id": 1}\'')
    publish.add_argument("--source", default="cli")
    publish.set_defaults(run=cmd_publish)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.run(args, load_config(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
