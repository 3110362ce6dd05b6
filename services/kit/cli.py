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


def cmd_dlq(args, config):
    from services.kit.amqp import make_connection
    from services.kit.dlq import DeadLetters
    from nameko.constants import AMQP_URI_CONFIG_KEY

    connection = make_connection(config[AMQP_URI_CONFIG_KEY], heartbeat=0)
    with DeadLetters(connection, config) as dead_letters:
        try:
            queues = dead_letters.queues(args.queues)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}")
        if args.action == "list":
            for row in dead_letters.summary(queues):
                reasons = "; ".join(f"{count}x {reason}" for reason, count
                                    in row["reasons"].most_common(3))
                print(f"{row['queue']:<52} {row['count']:>6}  oldest: {row['oldest'] or '-'}"
                      f"  {reasons}")
        elif args.action == "show":
            for queue in queues:
                for message in dead_letters.peek(queue, args.limit):
                    print(json.dumps(message.describe(), ensure_ascii=False))
        elif args.action == "requeue":
            if not (args.queues or args.event_ids or args.all):
                raise SystemExit("error: say which: --all, --queue Q or --event-id ID")
            moved = dead_letters.requeue(queues, set(args.event_ids or ()))
            print(f"requeued {moved} message(s)")
        elif args.action == "purge":
            total = sum(dead_letters.count(queue) for queue in queues)
            if total == 0:
                print("nothing to purge")
                return
            if not args.yes:
                answer = input(f"Delete {total} parked message(s) from {len(queues)} queue(s) "
                               f"for good? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("nothing purged")
                    return
            print(f"purged {dead_letters.purge(queues)} message(s)")


def cmd_migrate_queues(args, config):
    from nameko.constants import AMQP_URI_CONFIG_KEY

    from services.kit import topology
    from services.kit.amqp import make_connection
    from services.kit.constants import EXTRA_SUBSCRIPTIONS_CONFIG_KEY

    subscriptions = dict(topology.SUBSCRIPTIONS)
    subscriptions.update(config.get(EXTRA_SUBSCRIPTIONS_CONFIG_KEY) or {})
    if args.queues:
        unknown = set(args.queues) - set(subscriptions)
        if unknown:
            raise SystemExit(f"error: no such subscription: {', '.join(sorted(unknown))}")
        subscriptions = {name: keys for name, keys in subscriptions.items()
                         if name in args.queues}
    with make_connection(config[AMQP_URI_CONFIG_KEY], heartbeat=0) as connection:
        connection.ensure_connection(max_retries=3)
        for queue_name, moved in topology.migrate_queues(connection.connection, config,
                                                         subscriptions):
            if moved is None:
                print(f"{queue_name}: arguments already match")
            else:
                print(f"{queue_name}: recreated with the configured arguments, "
                      f"{moved} message(s) carried over")
        topology.declare_topology(connection, config, subscriptions)


def read_new_password(args):
    """The admin's password: one line of stdin (--password-stdin), or typed twice at a prompt."""
    import getpass
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise SystemExit("error: --password-stdin: no password on standard input")
        return password
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != password:
        raise SystemExit("error: the two passwords differ; nothing created")
    return password


def expiring_rpc_proxy(service_name, config, timeout):
    """nameko's ServiceRpcProxy whose requests expire after ``timeout`` seconds: a request no
    instance took in time is dropped by the broker, not run when the service comes back later."""
    from nameko.rpc import ServiceProxy
    from nameko.standalone.rpc import ServiceRpcProxy

    proxy = ServiceRpcProxy(service_name, config, timeout=timeout)
    proxy._proxy = ServiceProxy(proxy._worker_ctx, service_name, proxy._reply_listener,
                                expiration=timeout)
    return proxy


def cmd_create_admin(args, config):
    from nameko.constants import AMQP_URI_CONFIG_KEY
    from nameko.exceptions import RpcTimeout, UnknownService
    from nameko.utils import sanitize_url

    from services.kit.errors import ServiceError  # registers the typed errors with nameko
    from services.kit.rpc import DEFAULT_RPC_TIMEOUT, RPC_TIMEOUT_CONFIG_KEY

    password = read_new_password(args)
    timeout = args.timeout or float(config.get(RPC_TIMEOUT_CONFIG_KEY, DEFAULT_RPC_TIMEOUT))
    not_running = (f"error: the auth service did not answer within {timeout:g}s: is it running? "
                   f"(make run, or nameko run --config {args.config} services.auth.service); "
                   f"nothing created")
    try:
        with expiring_rpc_proxy("auth", config, timeout) as auth:
            user = auth.register(email=args.email, password=password, name=args.name,
                                 role="admin")
    except (RpcTimeout, UnknownService):
        raise SystemExit(not_running)
    except ServiceError as exc:
        fields = "; ".join(f"{field}: {' '.join(map(str, messages))}"
                           for field, messages in exc.fields.items())
        raise SystemExit(f"error: {exc.message}" + (f" ({fields})" if fields else ""))
    except OSError as exc:
        raise SystemExit(f"error: cannot reach the broker at "
                         f"{sanitize_uri(config[AMQP_URI_CONFIG_KEY])}: {exc}")
    print(user["id"])


def parse_moment_arg(value, name):
    from services.analytics.replay import ReplayError, parse_moment
    try:
        return parse_moment(value, name)
    except ReplayError as exc:
        raise SystemExit(f"error: {exc}")


def cmd_replay(args, config):
    from services.analytics.replay import ReplayError, replay
    since = parse_moment_arg(args.since, "--since")
    until = parse_moment_arg(args.until, "--until") if args.until else None
    try:
        replay(config, since, until, event_types=tuple(args.types or ()),
               to_queue=args.to_queue, dry_run=args.dry_run)
    except ReplayError as exc:
        raise SystemExit(f"error: {exc}")


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

    dlq = commands.add_parser("dlq", help="list, show, requeue or purge parked messages")
    dlq.add_argument("action", choices=["list", "show", "requeue", "purge"])
    dlq.add_argument("--queue", dest="queues", action="append",
                     help="a subscription or its DLQ, e.g. course.update_rating (repeatable)")
    dlq.add_argument("--event-id", dest="event_ids", action="append",
                     help="requeue only this event (repeatable)")
    dlq.add_argument("--all", action="store_true", help="requeue every parked message")
    dlq.add_argument("--limit", type=int, default=20, help="messages per queue for show")
    dlq.add_argument("--yes", action="store_true", help="purge without asking")
    dlq.set_defaults(run=cmd_dlq)

    migrate_queues = commands.add_parser(
        "migrate-queues", help="recreate queues whose arguments differ from the configuration "
        "(QUEUE_TYPE, EVENT_PRIORITY), keeping their messages; stop their consumers first")
    migrate_queues.add_argument("--queue", dest="queues", action="append",
                                help="only this subscription, e.g. course.update_rating")
    migrate_queues.set_defaults(run=cmd_migrate_queues)

    create_admin = commands.add_parser(
        "create-admin", help="create an admin user through the running auth service (RPC)")
    create_admin.add_argument("--email", required=True)
    create_admin.add_argument("--name", required=True)
    create_admin.add_argument("--password-stdin", action="store_true",
                              help="read the password from one line of standard input "
                                   "(default: prompt twice)")
    create_admin.add_argument("--timeout", type=float,
                              help="seconds to wait for auth (default: RPC_TIMEOUT)")
    create_admin.set_defaults(run=cmd_create_admin)

    replay = commands.add_parser(
        "replay", help="publish logged events again from the analytics event log, in log order, "
        "with their original envelopes (consumers skip what they already had)")
    replay.add_argument("--since", required=True,
                        help="ISO 8601; events whose timestamp is at or after it (no offset: UTC)")
    replay.add_argument("--until", help="ISO 8601; only events before it")
    replay.add_argument("--type", dest="types", action="append",
                        help="only this event type (repeatable)")
    replay.add_argument("--to-queue", help="to this one queue only (e.g. analytics.record_event) "
                        "instead of the knowledge_nest_events exchange")
    replay.add_argument("--dry-run", action="store_true",
                        help="list and count what would be replayed; publish nothing")
    replay.set_defaults(run=cmd_replay)

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
