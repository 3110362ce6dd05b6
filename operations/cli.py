"""knowledge-nest: the operator's commands for a KnowledgeNest deployment.

Every command reads the nameko config file (config.yml, with ${VAR:default} from the
environment): --config FILE, else $KN_CONFIG, else ./config.yml. Times (replay's --since,
--until) are ISO 8601 (2026-11-26T10:00:00Z; no offset: UTC) or relative to now: 90s, 30m, 1h,
2d, 1w, 1h30m. Long commands show a progress bar on a terminal and count lines otherwise.

This module is the whole CLI (parsing, presentation, progress); what it does lives beside it in
operations/, in the kit and in the analytics service (replay).
"""
import argparse
import contextlib
import inspect
import json
import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone

from services.kit.config import DEFAULT_CONFIG_PATH, load_config

CONFIG_ENV = "KN_CONFIG"
PROG = "knowledge-nest"


# -- times ------------------------------------------------------------------------------------

RELATIVE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RELATIVE = re.compile(r"(\d+)([smhdw])")


def parse_time(value, now=None):
    """An ISO 8601 date/time or a span back from ``now`` (``90s``, ``30m``, ``1h30m``, ``2d``),
    as an aware UTC datetime. A time without an offset is UTC. ValueError says what is wanted."""
    compact = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"(\d+[smhdw])+", compact):
        seconds = sum(int(amount) * RELATIVE_UNITS[unit]
                      for amount, unit in RELATIVE.findall(compact))
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None
                else moment.astimezone(timezone.utc))
    except (ValueError, OverflowError):  # Overflow: before 0001-01-01 in UTC
        raise ValueError(f"not a time: {value!r} (ISO 8601 such as 2026-11-26T10:00:00Z, "
                         f"or back from now: 90s, 30m, 1h, 2d, 1w, 1h30m)") from None


def time_argument(value):
    """argparse ``type=`` for every option that takes a time."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- progress ---------------------------------------------------------------------------------

class CountLines:
    """Progress where no one watches a terminal (a pipe, a log file): ``label: 200/1000`` lines,
    at most one every ``interval`` seconds, and always the last."""

    def __init__(self, label, total, stream, interval=2.0):
        self.label, self.total, self.stream, self.interval = label, total, stream, interval
        self.done = 0
        self._printed_at = time.monotonic()
        self._printed = None

    def update(self, count):
        self.done += count
        if time.monotonic() - self._printed_at >= self.interval:
            self._print()

    def _print(self):
        self.stream.write(f"{self.label}: {self.done}/{self.total}\n")
        self.stream.flush()
        self._printed_at, self._printed = time.monotonic(), self.done

    def close(self):
        if self._printed != self.done:
            self._print()


def progress_factory(stream=None):
    """The ``progress(label, total)`` the kit's long operations take: a tqdm bar (with rate and
    ETA) when ``stream`` (stderr) is a terminal, CountLines otherwise."""
    stream = stream or sys.stderr

    @contextlib.contextmanager
    def progress(label, total):
        if stream.isatty():
            from tqdm import tqdm
            bar = tqdm(total=total, desc=label, unit="msg", file=stream, dynamic_ncols=True,
                       leave=True)
        else:
            bar = CountLines(label, total, stream)
        try:
            yield bar
        finally:
            bar.close()
    return progress


# -- config -----------------------------------------------------------------------------------

class CliError(Exception):
    """A one-line message for the operator; the command exits with status 1 (2: usage)."""


def read_config(path):
    try:
        return load_config(path)
    except FileNotFoundError:
        raise CliError(f"no config file at {path!r}: pass --config FILE or set {CONFIG_ENV}")
    except IsADirectoryError:
        raise CliError(f"the config path {path!r} is a directory, not a file")
    except PermissionError:
        raise CliError(f"cannot read the config file {path!r}: permission denied")
    except Exception as exc:  # YAML syntax: its message names line and column
        detail = " ".join(str(exc).split())
        raise CliError(f"the config file {path!r} is not valid YAML: {detail}")


def amqp_uri(config):
    from services.kit.settings import AMQP_URI
    if AMQP_URI.key not in config:
        raise CliError(f"the config file has no {AMQP_URI.key}")
    return AMQP_URI.read(config)


def broker_connection(config):
    """A connected kombu connection (no heartbeat: the command reads it only when it waits)."""
    from services.kit.amqp import make_connection, sanitize_uri
    from services.kit.settings import AMQP_SSL
    uri = amqp_uri(config)
    connection = make_connection(uri, heartbeat=0, ssl=AMQP_SSL.read(config))
    try:
        connection.ensure_connection(max_retries=3)
    except Exception as exc:
        raise CliError(f"cannot reach the broker at {sanitize_uri(uri)}: {exc}") from None
    return connection


def print_json(value):
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# -- commands ---------------------------------------------------------------------------------

def cmd_declare(args, config):
    from operations.shell import declare
    declare(config)
    print("declared the knowledge_nest_events topology")


def cmd_publish(args, config):
    from operations.shell import publish_event
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise CliError(f"DATA is not JSON: {exc}")
    print(publish_event(config, args.event_type, data, source=args.source))


def services_with_databases(config, only=None):
    from services.kit.db import database_uri
    from services.kit.settings import DB_URIS
    names = [key.split(":")[0] for key in DB_URIS.read(config)]
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"error: no database configured for {', '.join(sorted(unknown))}")
        names = [name for name in names if name in only]
    return [(name, database_uri(config, name)) for name in names]


def cmd_migrate(args, config):
    from services.kit import migrations
    targets = services_with_databases(config, args.services)
    for service_name, _ in targets:
        # a database configured for a service without migrations is a broken install (a wheel
        # without them once migrated nothing and exited 0): stop before touching any database
        if not migrations.has_migrations(service_name):
            raise SystemExit(f"error: {service_name}: no migrations at "
                             f"{migrations.script_location(service_name)}; nothing migrated")
    for service_name, db_uri in targets:
        migrations.upgrade(service_name, db_uri)
        print(f"{service_name}: database at head")


def cmd_makemigration(args, config):
    from services.kit import migrations
    [(service_name, db_uri)] = services_with_databases(config, [args.service])
    migrations.upgrade(service_name, db_uri)
    migrations.make_revision(service_name, db_uri, args.message)


@contextlib.contextmanager
def dead_letters(config, queues):
    from operations.dlq import DeadLetters
    connection = broker_connection(config)
    with DeadLetters(connection, config) as session:
        try:
            yield session, session.queues(queues)
        except ValueError as exc:  # an unknown --queue
            raise CliError(str(exc)) from None


def cmd_dlq_list(args, config):
    with dead_letters(config, args.queues) as (session, queues):
        rows = session.summary(queues)
    if args.json:
        print_json([{"queue": row["queue"], "count": row["count"], "oldest": row["oldest"],
                     "reasons": dict(row["reasons"].most_common())} for row in rows])
        return
    if not args.all:
        rows = [row for row in rows if row["count"]] or rows[:0]
    if not rows:
        print("no parked messages")
        return
    width = max(len(row["queue"]) for row in rows)
    print(f"{'QUEUE':<{width}}  {'COUNT':>6}  {'OLDEST':<32}  REASONS")
    for row in rows:
        reasons = "; ".join(f"{count}x {reason}" for reason, count
                            in row["reasons"].most_common(3))
        print(f"{row['queue']:<{width}}  {row['count']:>6}  {row['oldest'] or '-':<32}  "
              f"{reasons}")


def cmd_dlq_show(args, config):
    with dead_letters(config, args.queues) as (session, queues):
        messages = [message.describe() for queue in queues
                    for message in session.peek(queue, args.limit)]
    if args.event_ids:
        messages = [message for message in messages if message["event_id"] in args.event_ids]
    if args.json:
        print_json(messages)
        return
    if not messages:
        print("no parked messages")
        return
    for message in messages:
        print(f"{message['queue']}  {message['event_id']}  {message['event_type'] or '-'}")
        print(f"  reason:    {message['reason']}")
        print(f"  attempts:  {message['attempts'] if message['attempts'] is not None else '-'}"
              f"   failed at: {message['failed_at'] or '-'}")
        print(f"  body:      {message['body'][:500]}")


def cmd_dlq_requeue(args, config):
    if not (args.queues or args.event_ids or args.all):
        raise CliError("say which: --all, --queue Q or --event-id ID")
    from operations.moves import MoveFailed
    with dead_letters(config, args.queues) as (session, queues):
        try:
            moved = session.requeue(queues, set(args.event_ids or ()),
                                    progress=progress_factory())
        except MoveFailed as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print_json({"requeued": moved})
    else:
        print(f"requeued {moved} message(s)")


def cmd_dlq_purge(args, config):
    with dead_letters(config, args.queues) as (session, queues):
        total = sum(session.count(queue) for queue in queues)
        if total == 0:
            print("nothing to purge")
            return
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"{total} message(s) would be deleted: pass --yes to confirm "
                               f"(standard input is not a terminal to ask on)")
            answer = input(f"Delete {total} parked message(s) from {len(queues)} queue(s) "
                           f"for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return
        print(f"purged {session.purge(queues)} message(s)")


def cmd_migrate_queues(args, config):
    from operations.moves import MoveFailed
    from operations.queue_migration import migrate_queues
    from services.kit import topology

    subscriptions = topology.configured_subscriptions(config)
    if args.queues:
        unknown = set(args.queues) - set(subscriptions)
        if unknown:
            raise CliError(f"no such subscription: {', '.join(sorted(unknown))}")
        subscriptions = {name: keys for name, keys in subscriptions.items()
                         if name in args.queues}
    with broker_connection(config) as connection:
        try:
            for queue_name, moved in migrate_queues(connection.connection, config, subscriptions,
                                                    progress_factory()):
                if moved is None:
                    print(f"{queue_name}: arguments already match")
                else:
                    print(f"{queue_name}: recreated with the configured arguments, "
                          f"{moved} message(s) carried over")
        except MoveFailed as exc:
            raise CliError(f"{exc}; run migrate-queues again once it is fixed") from None
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
    from nameko.exceptions import RpcTimeout, UnknownService

    from services.kit.amqp import sanitize_uri
    from services.kit.errors import ServiceError  # registers the typed errors with nameko
    from services.kit.settings import RPC_TIMEOUT

    password = read_new_password(args)
    timeout = args.timeout or RPC_TIMEOUT.read(config)
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
                         f"{sanitize_uri(amqp_uri(config))}: {exc}")
    print(user["id"])


def cmd_replay(args, config):
    from services.analytics.replay import ReplayError, replay
    try:
        replay(config, args.since, args.until, event_types=tuple(args.types or ()),
               to_queue=args.to_queue, dry_run=args.dry_run, progress=progress_factory())
    except ReplayError as exc:
        raise CliError(str(exc)) from None


# -- the parser -------------------------------------------------------------------------------

def queue_option(parser, what):
    parser.add_argument("--queue", dest="queues", action="append", metavar="Q",
                        help=f"{what}, e.g. course.update_rating or course.update_rating.dlq "
                             f"(repeatable; default: all)")


def json_option(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_command(commands, name, run, summary, description, examples, arguments=None):
    """A subcommand with its --help: summary, description and examples."""
    parser = commands.add_parser(
        name, help=summary, description=f"{summary}.\n\n{inspect.cleandoc(description)}",
        epilog="examples:\n" + "\n".join(f"  {PROG} {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    if arguments:
        arguments(parser)
    if run is not None:
        parser.set_defaults(run=run)
    return parser


def version():
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version
    try:
        return installed_version("knowledge-nest")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0],
        epilog=f"'{PROG} COMMAND --help' describes each command, with examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH,
                        help=f"nameko config file (default: ${CONFIG_ENV}, else "
                             f"{DEFAULT_CONFIG_PATH}; now %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_command(commands, "declare", cmd_declare,
                "declare the events exchange, its dead-letter exchange and every queue",
                """Idempotent: declares what is missing, leaves what exists. Every service does
                this when it starts; run it to prepare a broker before the first start.""",
                ["declare", "--config /etc/knowledge-nest/config.yml declare"])

    def migrate_arguments(parser):
        parser.add_argument("services", nargs="*", help="only these services (default: all)")
    add_command(commands, "migrate", cmd_migrate,
                "upgrade every service's database to its newest migration (alembic)",
                """Each service with a DB_URIS entry and migrations is upgraded to head; run it
                before starting a new version.""",
                ["migrate", "migrate auth course"], migrate_arguments)

    def makemigration_arguments(parser):
        parser.add_argument("service", help="e.g. course")
        parser.add_argument("-m", "--message", required=True, help="the revision's title")
    add_command(commands, "makemigration", cmd_makemigration,
                "write a migration from the difference between models and database",
                """For developers: upgrades the service's configured database to head, then
                writes services/<service>/migrations/versions/<rev>_<message>.py from what its
                models have that the database lacks. Read it before committing.""",
                ['makemigration course -m "add course level"'], makemigration_arguments)

    dlq = add_command(commands, "dlq", None,
                      "list, show, requeue or purge the messages parked in dead-letter queues",
                      """Each subscription <queue> has a <queue>.dlq where events its handler
                      could not take are parked with their reason (after the retries).""",
                      ["dlq list", "dlq show --queue course.update_rating --json",
                       "dlq requeue --all", "dlq purge --queue course.update_rating --yes"])
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")

    def list_arguments(parser):
        queue_option(parser, "only this subscription or its DLQ")
        parser.add_argument("--all", action="store_true",
                            help="list empty dead-letter queues too")
        json_option(parser)
    add_command(actions, "list", cmd_dlq_list,
                "how many messages each dead-letter queue holds, the oldest, the top reasons",
                """Reads the parked messages (up to 1000 a queue) and puts every one back.""",
                ["dlq list", "dlq list --all --json"], list_arguments)

    def show_arguments(parser):
        queue_option(parser, "only this subscription or its DLQ")
        parser.add_argument("--event-id", dest="event_ids", action="append", metavar="ID",
                            help="only this event (repeatable)")
        parser.add_argument("--limit", type=int, default=20,
                            help="messages per queue (default: %(default)s)")
        json_option(parser)
    add_command(actions, "show", cmd_dlq_show,
                "the parked messages themselves: event, reason, attempts, body",
                """Nothing is removed: every message read goes back to its queue, in order.""",
                ["dlq show --queue course.update_rating --limit 5",
                 "dlq show --json | jq '.[].reason'"], show_arguments)

    def requeue_arguments(parser):
        queue_option(parser, "from this subscription's DLQ")
        parser.add_argument("--event-id", dest="event_ids", action="append", metavar="ID",
                            help="only this event (repeatable)")
        parser.add_argument("--all", action="store_true", help="every parked message")
        json_option(parser)
    add_command(actions, "requeue", cmd_dlq_requeue,
                "send parked messages back to the queue they were parked from",
                """Without their failure headers, so they get every retry again. A message
                leaves its DLQ only once the broker confirmed its requeued copy; batches are
                confirmed together. Say which: --all, --queue or --event-id (combinable).""",
                ["dlq requeue --all", "dlq requeue --queue course.update_rating",
                 "dlq requeue --event-id 6f1c0e0a9b8d4e7f8a1b2c3d4e5f6a7b"], requeue_arguments)

    def purge_arguments(parser):
        queue_option(parser, "only this subscription's DLQ")
        parser.add_argument("--yes", action="store_true",
                            help="purge without asking (needed when stdin is no terminal)")
    add_command(actions, "purge", cmd_dlq_purge,
                "delete parked messages for good",
                """Asks first, unless --yes. The analytics event log still has every event that
                reached it, for a later replay.""",
                ["dlq purge --queue course.update_rating", "dlq purge --yes"], purge_arguments)

    def migrate_queues_arguments(parser):
        parser.add_argument("--queue", dest="queues", action="append", metavar="Q",
                            help="only this subscription, e.g. course.update_rating "
                                 "(repeatable; default: all)")
    add_command(commands, "migrate-queues", cmd_migrate_queues,
                "recreate queues whose arguments differ from the configuration, keeping their "
                "messages",
                """After a change of QUEUE_TYPE or EVENT_PRIORITY a service refuses to start
                (the broker will not redeclare a queue with other arguments). Stop the queue's
                consumers, run this, start them again. Messages are parked in
                <queue>.migrating (bound meanwhile, so nothing published is lost) and moved
                back, each batch confirmed before it is removed. Safe to run again after an
                interruption.""",
                ["migrate-queues", "migrate-queues --queue course.update_rating"],
                migrate_queues_arguments)

    def create_admin_arguments(parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from one line of standard input "
                                 "(default: prompt twice)")
        parser.add_argument("--timeout", type=float,
                            help="seconds to wait for auth (default: RPC_TIMEOUT)")
    add_command(commands, "create-admin", cmd_create_admin,
                "create an admin user through the running auth service (RPC)",
                """The public register route refuses the admin role; this is the way to make
                the first admin. The auth service must be running.""",
                ["create-admin --email root@example.com --name Root",
                 "create-admin --email root@example.com --name Root --password-stdin "
                 "< secret.txt"], create_admin_arguments)

    def replay_arguments(parser):
        parser.add_argument("--since", required=True, type=time_argument, metavar="TIME",
                            help="events whose timestamp is at or after TIME: ISO 8601 (no "
                                 "offset: UTC) or back from now (90s, 30m, 1h, 2d, 1w)")
        parser.add_argument("--until", type=time_argument, metavar="TIME",
                            help="only events before TIME (same forms)")
        parser.add_argument("--type", dest="types", action="append", metavar="EVENT_TYPE",
                            help="only this event type (repeatable)")
        parser.add_argument("--to-queue", metavar="Q",
                            help="to this one queue only (e.g. analytics.record_event) instead "
                                 "of the knowledge_nest_events exchange")
        parser.add_argument("--dry-run", action="store_true",
                            help="list and count what would be replayed; publish nothing")
    add_command(commands, "replay", cmd_replay,
                "publish logged events again from the analytics event log",
                """In log order, with their original envelopes (same event_id): consumers skip
                what they already had (their inbox), so replaying too much is harmless.
                Publishing is confirmed batch by batch; running it again after a failure is
                safe.""",
                ["replay --since 1h --dry-run", "replay --since 2d --until 1d --type "
                 "review.created", "replay --since 2026-11-26T10:00:00Z --to-queue "
                 "analytics.record_event"], replay_arguments)

    def publish_arguments(parser):
        parser.add_argument("event_type", help="e.g. user.registered")
        parser.add_argument("data", help='the event data as JSON, e.g. \'{"user_id": 1}\'')
        parser.add_argument("--source", default="cli", help="the envelope's source "
                                                              "(default: %(default)s)")
    add_command(commands, "publish", cmd_publish,
                "publish one event, confirmed, and print its event_id",
                """For tests and repairs: the event goes to knowledge_nest_events with the
                kit's envelope, exactly as a service's outbox would send it.""",
                ["publish course.created '{\"course_id\": 7, \"title\": \"Rust\"}'"],
                publish_arguments)
    return parser


def main(argv=None):
    from services.kit.settings import SettingError
    args = build_parser().parse_args(argv)
    try:
        args.run(args, read_config(args.config))
    except (CliError, SettingError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
