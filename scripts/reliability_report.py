"""Render docs/reliability.md from the fault matrix's results.

    make reliability-report
    (= RELIABILITY_RESULTS=var/reliability.json pytest tests/faults, then this script)

    python scripts/reliability_report.py var/reliability.json docs/reliability.md
"""
import json
import sys
from datetime import datetime, timezone

COLUMNS = [
    ("attempted", "writes attempted"),
    ("accepted", "accepted (rows in the DB)"),
    ("events_published", "events published (outbox rows sent)"),
    ("copies_routed", "copies the broker routed"),
    ("delivered", "delivered (effects)"),
    ("duplicates_absorbed", "duplicates absorbed"),
    ("dead_lettered", "dead-lettered"),
    ("lost", "lost"),
    ("doubled_effects", "doubled effects"),
    ("answers", "HTTP 201/409/503"),
    ("health_recovery_s", "/health 200 again after (s)"),
]

INTRO = """\
# Reliability: the fault matrix

What `tests/faults/` (marked `faults`) does to the running services, and what came out of it.
Regenerate this page with `make reliability-report` (it runs the matrix with
`RELIABILITY_RESULTS=var/reliability.json`, then `scripts/reliability_report.py`); run the matrix
alone with `make test-faults`. `make test` (CI) runs it too.

**Set-up.** The real `course` and `notification` services (nameko containers), the real broker
(each test its own vhost; the shared broker is never stopped), each service its own migrated
database (SQLite; F6 puts notification's on PostgreSQL). The services reach the broker through a
TCP proxy (`tests/support/proxy.py`) that the test cuts or whose connections it drops. F3 runs
notification as a separate `nameko run` process and kills it with SIGKILL.

**The cluster rows (H1-H4)** run the whole suite as `make run` does: `nameko run --config
config.yml` processes configured by environment variables (`RABBITMQ_HOST`/`RABBITMQ_PORT` of one
node for H1; `RABBITMQ_HOSTS` of all three and `QUEUE_TYPE=quorum` for H2-H4), on a three-node
RabbitMQ cluster the test session starts beside the machine's broker (`tests/support/cluster.py`,
the same as `make cluster`; each node `+S 1:1`, 1 GB memory cap), each service its own migrated
database (SQLite; H3 puts course and notification on PostgreSQL, shared by their two instances).
They write over HTTP: `POST /api/courses/1/enroll` by student n; a client that gets a 503 tries
again after 0.5 s until it gets 201 or 409 (409: its earlier try had been accepted after all), and
any other answer fails the row. "HTTP 201/409/503" counts the answers; "/health 200 again after"
is the time from the fault until `GET /health` (polled every 0.25 s) answered 200 again after its
last other answer (0: it never stopped answering 200). Those rows have no tap queue: "copies the
broker routed" and "duplicates absorbed" are not counted there (-).

**A write** is `course.enroll(user, course)`: it commits an enrollment and its `course.enrolled`
event in one transaction (outbox). **The effect** is notification's "you are enrolled" notification
(one per event, committed with the event's inbox record). The test calls the write on course's
entrypoint directly (nameko's `entrypoint_hook`), so accepting it never needs the broker: that is
the outbox's promise. Over HTTP the gateway reaches course by RPC, which does need the broker;
those requests get a 503 while it is away and are not accepted (not measured here).

**Every number comes from ground truth**, not from the code under test's counters:

| column | counted from |
|---|---|
| writes attempted | calls the test made |
| accepted | enrollment rows in course's database (each call that answered OK must be one) |
| events published | course's outbox rows marked sent |
| copies the broker routed | a tap queue bound to `course.enrolled` beside the consumer's: every copy the broker routed |
| delivered | accepted events with a notification in notification's database |
| duplicates absorbed | copies routed minus distinct events: extra copies that reached the consumer and had no effect |
| dead-lettered | messages in `notification.confirm_enrollment.dlq` |
| lost | accepted events with no notification (must be 0) |
| doubled effects | notifications beyond one per event (must be 0) |

"""

OUTRO = """
**What the scenarios show.**

- Connections (F1, F2): nameko's QueueConsumer reconnects the consumers by itself; the outbox
  relay's `ConfirmedPublisher` reopens its connection on the next batch, and the relay's sweep
  (`OUTBOX_POLL_INTERVAL`) publishes what was left while the broker was away. Writes never wait
  for the broker: they are accepted into the outbox. A message published but not yet confirmed
  when the link dropped is published again: a duplicate the inbox absorbs.
- Crashes (F3, F8): a consumer killed before it acked gets its unacked messages redelivered; those
  whose transaction had committed are skipped by the inbox. A relay killed after the broker's
  confirm but before marking the rows sent republishes them on restart: duplicates, absorbed.
- Bad input (F4) is parked at once in `<queue>.dlq` with its reason, and the queue goes on.
- A consumer's database away (F6): handlers fail, are retried after `EVENT_RETRY_DELAYS`, and
  what still failed after the last retry is parked with its exception; `knowledge-nest dlq
  requeue` sends it back once the database is there again (the scenario does that, and counts it).
- A broker node restarting under the whole suite (H1): each request meanwhile gets a 503
  `service_unavailable` with `Retry-After` (the broker refused the RPC), never a 500; nameko's
  consumers reconnect by themselves and the gateway heals without a restart.
- A cluster node lost (H2, H4): with `RABBITMQ_HOSTS` every connection fails over to the next node
  and every queue (subscriptions, retries, DLQs, nameko's RPC and reply queues) is a quorum queue
  with a member on each node, so a new leader is elected and nothing on the lost node is missed.
  A publish nacked or unconfirmed during the election is published again (a duplicate the inbox
  absorbs). Requests in flight when it happens get 503s.
- More instances (H3): the survivors take over the RPC queue and the backlog; the killed one's
  unacked messages are redelivered to them, and what it had committed is skipped by the inbox.
- Delivery is at least once end to end and the effects exactly once: lost and doubled are 0 in
  every row.
"""


def render(results):
    lines = [INTRO, "| scenario | what happens | " + " | ".join(t for _, t in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name in sorted(results):
        row = results[name]
        cells = [str(row.get(key, "-")) for key, _ in COLUMNS]
        lines.append(f"| {name} | {row.get('description', '')} | " + " | ".join(cells) + " |")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append("")
    lines.append(f"Observed on {stamp}: RabbitMQ 3.10, one run of `make reliability-report`. "
                 "Retry timing and connection drops make the duplicate counts vary a little "
                 "from run to run; lost and doubled may not.")
    lines.append(OUTRO)
    return "\n".join(lines)


def main(argv):
    source, target = argv[1], argv[2]
    with open(source) as results_file:
        results = json.load(results_file)
    if not results:
        raise SystemExit(f"no results in {source}")
    with open(target, "w") as page:
        page.write(render(results))
    print(f"wrote {target} ({len(results)} scenarios)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
