"""RPC with a timeout: nameko's ``RpcProxy`` waits for a reply forever.

    class ReviewService:
        course = TimedRpcProxy("course")          # timeout from RPC_TIMEOUT (seconds)

        @rpc
        def create_review(self, ...):
            if not self.course.is_enrolled(user_id, course_id): ...

A call that gets no reply in time raises ``ServiceUnavailable``; a late reply is dropped by
nameko's reply listener (it no longer knows the correlation id).
"""
import eventlet
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy

from services.kit.errors import ServiceUnavailable

RPC_TIMEOUT_CONFIG_KEY = "RPC_TIMEOUT"
DEFAULT_RPC_TIMEOUT = 5.0


class TimedMethodProxy(MethodProxy):
    timeout = DEFAULT_RPC_TIMEOUT

    def __call__(self, *args, **kwargs):
        reply = self._call(*args, **kwargs)
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


class TimedRpcProxy(RpcProxy):
    def __init__(self, target_service, timeout=None, **options):
        super().__init__(target_service, **options)
        self.timeout = timeout

    def get_dependency(self, worker_ctx):
        timeout = self.timeout or float(self.container.config.get(RPC_TIMEOUT_CONFIG_KEY,
                                                                  DEFAULT_RPC_TIMEOUT))
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener,
                                 timeout, **self.options)
