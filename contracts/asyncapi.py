"""The AsyncAPI 3.0 document of the event contract, generated, never written by hand.

    python -m contracts.asyncapi > docs/asyncapi.json     # after changing contracts/

One channel per event type on the ``knowledge_nest_events`` topic exchange (its address is the
routing key), one message each (the envelope, with the type's ``data`` schema), a ``send``
operation for the service that owns the type and a ``receive`` operation for every subscription
whose binding keys match it. tests/unit/test_contracts.py fails when docs/asyncapi.json and this
output differ, and validates it with the official parser (@asyncapi/parser).
"""
import json
import re
import sys

from marshmallow import fields, validate

from contracts.events import CONTRACTS, EXCHANGE
from contracts.subscriptions import SUBSCRIPTIONS

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
ENVELOPE_VERSION = 1


def _camel(text):
    words = re.split(r"[^0-9a-zA-Z]+", text)
    return words[0] + "".join(word[:1].upper() + word[1:] for word in words[1:])


def topic_matches(binding_key, routing_key):
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    def match(pattern, words):
        if not pattern:
            return not words
        if pattern[0] == "#":
            return any(match(pattern[1:], words[index:]) for index in range(len(words) + 1))
        return bool(words) and pattern[0] in ("*", words[0]) and match(pattern[1:], words[1:])
    return match(binding_key.split("."), routing_key.split("."))


def subscribers(event_type):
    """The queues (``<service>.<method>``) whose binding keys match ``event_type``."""
    return sorted(queue for queue, keys in SUBSCRIPTIONS.items()
                  if any(topic_matches(key, event_type) for key in keys))


def field_schema(field):
    """JSON Schema of one marshmallow field, for the types the contracts use."""
    if isinstance(field, fields.Email):
        schema = {"type": "string", "format": "email"}
    elif isinstance(field, fields.String):
        schema = {"type": "string"}
    elif isinstance(field, fields.Boolean):
        schema = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        schema = {"type": "integer"}
    else:  # pragma: no cover - a new field type needs its mapping here
        raise TypeError(f"no JSON Schema mapping for {type(field).__name__}")
    for validator in field.validators:
        if isinstance(validator, validate.Length):
            if validator.min is not None:
                schema["minLength"] = validator.min
            if validator.max is not None:
                schema["maxLength"] = validator.max
        elif isinstance(validator, validate.Range):
            if validator.min is not None:
                schema["minimum"] = validator.min
            if validator.max is not None:
                schema["maximum"] = validator.max
    if field.metadata.get("description"):
        schema["description"] = field.metadata["description"]
    return schema


def data_schema(contract):
    declared = contract.data().fields
    properties = {}
    for name, field in declared.items():
        properties[name] = field_schema(field)
        if name in contract.personal:
            properties[name]["x-personal-data"] = True
    return {"type": "object", "properties": properties,
            "required": list(declared),  # the owner always sends every field
            "additionalProperties": True}  # fields may be added within a version


def envelope_schema(contract, data_ref):
    return {
        "type": "object",
        "required": ["event_id", "event_type", "timestamp", "source", "version", "data"],
        "properties": {
            "event_id": {"type": "string", "description": "unique; also the AMQP message_id",
                         "pattern": "^[0-9a-f]{32}$"},
            "event_type": {"type": "string", "const": contract.event_type},
            "timestamp": {"type": "string", "format": "date-time",
                          "description": "when it happened (UTC, with an offset)"},
            "source": {"type": "string", "const": contract.owner,
                       "description": "the publishing service; also the AMQP app_id"},
            "version": {"type": "integer", "const": contract.version,
                        "description": "the data's version"},
            "data": {"$ref": data_ref},
        },
    }


def document():
    """The AsyncAPI document, as a dict."""
    channels, operations, messages, schemas = {}, {}, {}, {}
    for event_type, contract in CONTRACTS.items():
        name = _camel(event_type)
        channel_ref = f"#/channels/{name}"
        message_ref = f"#/components/messages/{name}"
        schemas[f"{name}Data"] = data_schema(contract)
        schemas[f"{name}Envelope"] = envelope_schema(contract,
                                                     f"#/components/schemas/{name}Data")
        messages[name] = {
            "name": event_type,
            "title": f"{event_type} v{contract.version}",
            "summary": contract.summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}Envelope"},
            "correlationId": {"description": "the event_id, as the AMQP message_id",
                              "location": "$message.payload#/event_id"},
            "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": event_type,
                                  "bindingVersion": AMQP_BINDING_VERSION}},
        }
        channels[name] = {
            "address": event_type,
            "title": event_type,
            "description": f"Routing key {event_type!r} on the {EXCHANGE} topic exchange.",
            "messages": {name: {"$ref": message_ref}},
            "bindings": {"amqp": {"is": "routingKey",
                                  "exchange": {"name": EXCHANGE, "type": "topic",
                                               "durable": True, "autoDelete": False,
                                               "vhost": "/"},
                                  "bindingVersion": AMQP_BINDING_VERSION}},
        }
        operations[f"{contract.owner}Publishes{name[:1].upper()}{name[1:]}"] = {
            "action": "send",
            "channel": {"$ref": channel_ref},
            "summary": f"{contract.owner} publishes {event_type} (the only service allowed to)",
            "messages": [{"$ref": f"{channel_ref}/messages/{name}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True,
                                  "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for queue in subscribers(event_type):
            operations[f"{_camel(queue)}Receives{name[:1].upper()}{name[1:]}"] = {
                "action": "receive",
                "channel": {"$ref": channel_ref},
                "summary": f"{queue.split('.')[0]} handles it on queue {queue!r}",
                "messages": [{"$ref": f"{channel_ref}/messages/{name}"}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "KnowledgeNest events",
            "version": "1.0.0",
            "description": "Every fact of the e-learning platform, as JSON on one durable topic "
                           f"exchange ({EXCHANGE}), routing key = event type. Persistent "
                           "(delivery_mode 2), published from a transactional outbox with "
                           "publisher confirms; each consumer keeps an inbox, so a redelivered "
                           "event has one effect. Fields marked x-personal-data are never shown "
                           "on the public dashboard.",
        },
        "defaultContentType": "application/json",
        "servers": {"broker": {"host": "localhost:5672", "protocol": "amqp",
                               "protocolVersion": "0.9.1",
                               "description": "RabbitMQ (RABBITMQ_HOST / RABBITMQ_HOSTS)"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render():
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
