"""One broker user per service, with the least permissions it needs (RabbitMQ's configure,
write and read patterns), for ``scripts/broker_users.py`` and docker/rabbitmq/definitions.json.

What each service does on the broker, and so what it may do:

- RPC (every service): declare and use ``nameko-rpc``, its own ``rpc-<service>`` queue and its
  ``rpc.reply-<service>-<id>`` reply queues; publish requests and replies to ``nameko-rpc``.
- Events (every service but the gateway): declare the whole event topology at start
  (services/kit/topology.py: the exchanges and every subscription's queue, retry queues and
  DLQ, bound to ``knowledge_nest_events``), publish to the events exchange (its own events, and
  the shell exchanges' bindings need write on it), to the DLX and to its retry queues (the
  default exchange). Declaring a queue with a dead-letter exchange takes read on it, so each
  such service may read every event queue, not only its own: the price of every service
  declaring the whole topology (events published before a consumer's first start wait for it).
- The gateway: RPC only, plus its live feed queue ``gateway.live.<id>`` bound to the events
  exchange (read on it); it cannot publish an event at all.

RabbitMQ cannot tell event types apart by these patterns: any service may still publish any
routing key to the events exchange. That is what the ``user_id`` check of services/kit/trust.py
settles (EVENT_TRUST): a consumer parks an event not published by its type's owner.
"""
import base64
import hashlib
import os
import re

from contracts import OWNERS, SHELL_EVENT_EXCHANGES, SUBSCRIPTIONS

SERVICES = ("auth", "course", "review", "notification", "analytics", "gateway")
DEFAULT_USER_PREFIX = "knowledge_nest_"
# every queue and exchange of the event topology
_EXCHANGES = r"knowledge_nest_events|knowledge_nest_events\.dlx|knowledge_nest\.events|" \
             r"(%s)\.events" % "|".join(name.split(".")[0] for name in SHELL_EVENT_EXCHANGES)
_EVENT_QUEUES = r"(%s)\..+" % "|".join(sorted({name.split(".")[0] for name in SUBSCRIPTIONS}))


def default_users(prefix=DEFAULT_USER_PREFIX):
    return {service: prefix + service for service in SERVICES}


def permissions(service):
    """{"configure": regex, "write": regex, "read": regex} for ``service``'s broker user."""
    own = re.escape(service)
    rpc = rf"nameko-rpc|rpc-{own}|rpc\.reply-{own}-.+"
    if service == "gateway":
        live = r"gateway\.live\..+"
        return {"configure": rf"^({rpc}|{live})$", "write": rf"^({rpc}|{live})$",
                "read": rf"^({rpc}|{live}|knowledge_nest_events)$"}
    topology = rf"{_EXCHANGES}|{_EVENT_QUEUES}"
    # read on every event queue too: RabbitMQ asks for read on a queue to declare it with a
    # dead-letter exchange, and every service declares the whole topology
    return {"configure": rf"^({rpc}|{topology})$",
            "write": rf"^({rpc}|{topology}|amq\.default)$",
            "read": rf"^({rpc}|{topology})$"}


def publishers(users):
    """EVENT_PUBLISHERS for ``users`` (service -> broker user): the owners' users."""
    return {service: users[service] for service in sorted(set(OWNERS.values()))}


def password_hash(password, salt=None):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()
                            ).decode("ascii")


def definitions(users, passwords, vhost="/", operator=None, hashed=False):
    """A RabbitMQ definitions document with ``users`` (service -> name; ``passwords`` service
    -> password) and, if given, ``operator`` = (name, password) with every permission (CLI,
    replay, seed events). ``hashed``: passwords as RabbitMQ's salted hashes (for a file that
    the broker loads at boot) rather than in clear (for the management API)."""
    document = {"users": [], "vhosts": [{"name": vhost}], "permissions": []}

    def user(name, password, tags):
        if hashed:
            return {"name": name, "password_hash": password_hash(password), "tags": tags,
                    "hashing_algorithm": "rabbit_password_hashing_sha256"}
        return {"name": name, "password": password, "tags": tags}

    for service in SERVICES:
        document["users"].append(user(users[service], passwords[service], ""))
        document["permissions"].append(dict(user=users[service], vhost=vhost,
                                            **permissions(service)))
    if operator is not None:
        name, password = operator
        document["users"].append(user(name, password, "administrator"))
        document["permissions"].append({"user": name, "vhost": vhost, "configure": ".*",
                                        "write": ".*", "read": ".*"})
    return document


class ManagementApi:
    """Just enough of RabbitMQ's management HTTP API to create users and their permissions."""

    def __init__(self, url, user, password):
        import requests
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (user, password)

    def _put(self, path, body):
        response = self.session.put(f"{self.url}/api/{path}", json=body, timeout=10)
        response.raise_for_status()

    def apply(self, document):
        from urllib.parse import quote
        for vhost in document["vhosts"]:
            self._put(f"vhosts/{quote(vhost['name'], safe='')}", {})
        for user in document["users"]:
            self._put(f"users/{quote(user['name'], safe='')}",
                      {key: value for key, value in user.items() if key != "name"})
        for grant in document["permissions"]:
            self._put(f"permissions/{quote(grant['vhost'], safe='')}/"
                      f"{quote(grant['user'], safe='')}",
                      {key: grant[key] for key in ("configure", "write", "read")})

    def delete_users(self, names):
        from urllib.parse import quote
        for name in names:
            self.session.delete(f"{self.url}/api/users/{quote(name, safe='')}", timeout=10)
