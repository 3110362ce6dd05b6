"""RPC with a timeout: nameko's ``RpcProxy`` waits for a reply forever.

    class ReviewService:
        course = TimedRpcProxy("course")          # timeout from RPC_TIMEOUT (seconds)

        @rpc
        def create_review(self, ...):
            if not self.course.is_enrolled(user_id, course_id): ...

A call that gets no reply in time raises ``ServiceUnavailable``; a late reply is dropped by
nameko's reply listener (it no longer knows the correlation id). So does a call the broker
fails under (refused, reset, channel closed, nack): the caller, the gateway, answers 503 and
the client tries again; a call that reached the service may have had its effect, and the retry
gets what a second call gets (409 for an enrollment).

``rpc`` here is nameko's ``@rpc`` with three differences:

- it is the method's unit of work (services/kit/db.py): the method writes with
  ``self.db.session`` and does not commit; the kit commits before the reply goes, so a caller
  that got an answer can read what it wrote, and a commit that fails is the caller's error (a
  unique constraint declared with ``raises_conflict`` is a ``Conflict``)::

      method returned --> commit --> reply with the result   (the commit failed: its error)
      method raised   --> roll back --> reply with the error

- ``@rpc(read_only=True)`` marks a method that only reads: on PostgreSQL it runs without a
  transaction, so it costs no BEGIN and no COMMIT (a round trip less; its statements see
  what they would see in one: each statement its own snapshot under READ COMMITTED), and a
  write in it is refused (services/kit/db.py);

- its ``rpc-<service>`` queue, like every reply queue of a ``TimedRpcProxy``, is a quorum
  queue when ``QUEUE_TYPE`` is quorum: nameko declares them classic, and a classic queue on a
  dead node stops that service's whole consumer (every ``@rpc``, every RPC reply) until the
  node returns.
"""
import logging

import amqp
import eventlet
import kombu.exceptions
from nameko import rpc as nameko_rpc
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy

from services.kit import topology
from services.kit.amqp import QueueConsumer
from services.kit.db import Database, find_database
from services.kit.errors import ServiceUnavailable
from services.kit.settings import RPC_TIMEOUT

log = logging.getLogger(__name__)

# What the broker (or the way to it) raises under a call: refused or reset connections
# (OSError), kombu's wrapping of them, a channel or connection the broker closed, a nack.
BROKER_ERRORS = (OSError, kombu.exceptions.OperationalError, kombu.exceptions.ConnectionError,
                 amqp.exceptions.AMQPError, amqp.exceptions.MessageNacked)


class TimedMethodProxy(MethodProxy):
    timeout = RPC_TIMEOUT.default

    def __call__(self, *args, **kwargs):
        try:
            reply = self._call(*args, **kwargs)
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(
                f"{self.service_name}.{self.method_name}: the broker is unavailable "
                f"({type(exc).__name__})") from None
        try:
            with eventlet.Timeout(self.timeout):
                return reply.result()
        except eventlet.Timeout:
            raise ServiceUnavailable(
                f"{self.service_name}.{self.method_name} did not answer within "
                f"{self.timeout:g}s") from None


class TimedServiceProxy(ServiceProxy):
    def __init__(self, worker_ctx, service_name, reply_listener, timeout, **options):
        super().__init__(worker_ctx, service_name, reply_listener, **options)
        self._timeout = timeout

    def __getattr__(self, name):
        proxy = TimedMethodProxy(self.worker_ctx, self.service_name, name,
                                 self.reply_listener, **self.options)
        proxy.timeout = self._timeout
        return proxy


class RpcConsumer(nameko_rpc.RpcConsumer):
    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        self.queue.queue_arguments = dict(self.queue.queue_arguments or {},
                                          **topology.replicated_arguments(self.container.config))

    def handle_result(self, message, result, exc_info):
        # nameko lets a reply that cannot be published (the broker went away meanwhile) raise
        # out of the worker, which kills the whole service. The caller times out instead
        # (a 503 at the gateway); the request is acked if its connection still lives.
        try:
            return super().handle_result(message, result, exc_info)
        except BROKER_ERRORS as exc:
            log.warning("reply to %s not sent, the broker is unavailable (%s)",
                        message.properties.get("reply_to"), exc)
            self.queue_consumer.ack_message(message)
            return result, exc_info


class Rpc(nameko_rpc.Rpc):
    rpc_consumer = RpcConsumer()
    ends_transaction = True  # Database.worker_result ends it if handle_result did not

    def __init__(self, read_only=False, **kwargs):
        """``read_only``: the method only reads; on PostgreSQL its statements run without a
        transaction (services/kit/db.py ``read_only_sessions``), and a write is refused."""
        super().__init__(**kwargs)
        self.read_only = read_only

    def setup(self):
        super().setup()
        # the service's one Database; a service without any has nothing to commit
        has_database = any(isinstance(dep, Database) for dep in self.container.dependencies)
        self.database = find_database(self.container, "@rpc") if has_database else None

    def handle_result(self, message, worker_ctx, result, exc_info):
        # nameko calls this (which replies) before the dependencies' worker_result: the
        # transaction must end here, while its outcome can still be the answer
        if self.database is not None:
            exc_info = self.database.end_transaction(worker_ctx, exc_info)
            if exc_info is not None:
                result = None
        return super().handle_result(message, worker_ctx, result, exc_info)


rpc = Rpc.decorator


class ReplyListener(nameko_rpc.ReplyListener):
    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()  # a quorum reply queue keeps nameko's x-expires (RabbitMQ 3.10 has it)
        self.queue.queue_arguments = dict(self.queue.queue_arguments or {},
                                          **topology.replicated_arguments(self.container.config))


class TimedRpcProxy(RpcProxy):
    rpc_reply_listener = ReplyListener()

    def __init__(self, target_service, timeout=None, **options):
        super().__init__(target_service, **options)
        self.timeout = timeout

    def get_dependency(self, worker_ctx):
        timeout = self.timeout or RPC_TIMEOUT.read(self.container.config)
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener,
                                 timeout, **self.options)
