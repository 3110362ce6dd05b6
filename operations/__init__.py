"""The operators' tools of a KnowledgeNest deployment, on top of the kit and the services.

    cli.py              the ``knowledge-nest`` command
    runner.py           ``make run``: every service and the gateway in one process
    shell.py            declare the topology, publish an event by hand (``nameko shell``)
    dlq.py              list, show, requeue and purge parked messages
    queue_migration.py  recreate queues whose arguments changed, keeping their messages
    moves.py            moving messages between queues without losing any (dlq, migration)
    broker_access.py    one broker user per service with its least permissions

The kit (services/kit/) is a library that knows no service; what knows the suite's services, and
what only an operator runs, lives here.
"""
