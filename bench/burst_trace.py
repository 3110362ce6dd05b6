"""auth and the gateway with a timestamp at each stage of a login, for bench/burst_probe.py.

``nameko run bench.burst_trace:AuthService`` (or ``:GatewayService``) patches, in that process
only, the steps a login passes (the gateway's turn, its RPC, auth's message, worker, throttle,
hashing turn) to append ``wall-clock-time stage email`` lines to $BURST_TRACE_DIR/<pid>.trace.
Nothing of it is in the product code.
"""
import functools
import json
import os
import time

import eventlet
from nameko import rpc as nameko_rpc

from gateway import http as gateway_http
from gateway.service import GatewayService
from services.auth import passwords as auth_passwords
from services.auth.service import AuthService
from services.auth.throttle import LoginThrottle
from services.kit import rpc as kit_rpc
from services.kit import turns as kit_turns

__all__ = ["AuthService", "GatewayService"]

_out = open(os.path.join(os.environ["BURST_TRACE_DIR"], f"{os.getpid()}.trace"), "a",
            buffering=1)


def note(stage, key=None):
    if key is None:
        key = getattr(eventlet.getcurrent(), "trace_key", "?")
    _out.write(f"{time.time():.6f} {stage.replace(' ', '|')} {key}\n")


def tag(key):
    eventlet.getcurrent().trace_key = key


# -- the gateway -------------------------------------------------------------------------------

_handle_request = gateway_http.GatewayHttpEntrypoint.handle_request


def handle_request(self, request):
    if self.turns is None:
        return _handle_request(self, request)
    try:
        key = json.loads(request.environ["wsgi.input"].getvalue())["email"]
    except Exception:  # noqa: BLE001
        key = "?"
    tag(key)
    note("gw.arrive")
    try:
        return _handle_request(self, request)
    finally:
        note("gw.done")


gateway_http.GatewayHttpEntrypoint.handle_request = handle_request

_call = kit_rpc.TimedMethodProxy.__call__


def call(self, *args, **kwargs):
    if self.method_name != "authenticate":
        return _call(self, *args, **kwargs)
    note("gw.rpc_sent", args[0])
    try:
        return _call(self, *args, **kwargs)
    finally:
        note("gw.rpc_reply", args[0])


kit_rpc.TimedMethodProxy.__call__ = call

# -- the turns (both) --------------------------------------------------------------------------

_turn = kit_turns.Turns.turn


def _which(turns):
    return "hash" if isinstance(turns, auth_passwords.HashingSlots) else "gw"


def turn(self, timeout=None):
    note(f"{_which(self)}.turn_requested")
    if hasattr(self, "running"):  # the tree before Turns' own FIFO: eventlet's Semaphore
        _trace_semaphore(self)
    return _turn(self, timeout)


def _trace_semaphore(turns):
    which, running = _which(turns), turns.running
    if hasattr(running, "_traced"):
        return
    acquire, release, do_acquire = running.acquire, running.release, running._do_acquire

    def traced_acquire(*args, **kwargs):
        got = acquire(*args, **kwargs)
        note(f"{which}.turn_acquired" if got else f"{which}.turn_timeout")
        return got

    def traced_release(*args, **kwargs):
        note(f"{which}.release c={running.counter} w={len(running._waiters)}")
        return release(*args, **kwargs)

    def traced_do_acquire():
        head = getattr(running._waiters[0], "trace_key", "?") if running._waiters else "-"
        note(f"{which}.do_acquire c={running.counter} w={len(running._waiters)} head={head}")
        return do_acquire()
    running.acquire, running.release, running._do_acquire = (
        traced_acquire, traced_release, traced_do_acquire)
    running._traced = True


kit_turns.Turns.turn = turn

if hasattr(kit_turns.Turns, "_take"):
    _take, _pass_on = kit_turns.Turns._take, kit_turns.Turns._pass_on

    def take(self, timeout):
        try:
            _take(self, timeout)
        except kit_turns.TurnTimeout:
            note(f"{_which(self)}.turn_timeout")
            raise
        note(f"{_which(self)}.turn_acquired")

    def pass_on(self):
        note(f"{_which(self)}.release free={self.free} w={len(self._waiting)}")
        _pass_on(self)

    kit_turns.Turns._take, kit_turns.Turns._pass_on = take, pass_on

# -- auth --------------------------------------------------------------------------------------

_handle_message = nameko_rpc.Rpc.handle_message


def handle_message(self, body, message):
    if self.method_name == "authenticate":
        note("auth.message", body["args"][0] if body.get("args") else body["kwargs"].get("email"))
    return _handle_message(self, body, message)


nameko_rpc.Rpc.handle_message = handle_message

_handle_result = kit_rpc.Rpc.handle_result


def handle_result(self, message, worker_ctx, result, exc_info):
    if self.method_name == "authenticate":
        note("auth.reply_start", worker_ctx.args[0])
        try:
            return _handle_result(self, message, worker_ctx, result, exc_info)
        finally:
            note("auth.reply_sent", worker_ctx.args[0])
    return _handle_result(self, message, worker_ctx, result, exc_info)


kit_rpc.Rpc.handle_result = handle_result

_authenticate = AuthService.authenticate


@functools.wraps(_authenticate)
def authenticate(self, email, password, client_address=None):
    tag(email)
    note("auth.worker_start")
    try:
        return _authenticate(self, email, password, client_address)
    finally:
        note("auth.worker_end")


AuthService.authenticate = authenticate


def _wrap(cls, name):
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        note(f"auth.{name}_start")
        try:
            return original(*args, **kwargs)
        finally:
            note(f"auth.{name}_end")
    setattr(cls, name, wrapper)


for _name in ("admit", "succeeded"):
    _wrap(LoginThrottle, _name)

_run = auth_passwords.HashingSlots.run


def run(self, function, *args):
    try:
        return _run(self, function, *args)
    finally:
        note("hash.done")


auth_passwords.HashingSlots.run = run
