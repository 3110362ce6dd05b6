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
