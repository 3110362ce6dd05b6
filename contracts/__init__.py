"""KnowledgeNest's event contract, as code: what each event carries, who publishes it, who reads it.

- ``contracts.events``: one ``Contract`` per event type (routing key, version, owner, fields,
  personal fields), used by producers to check what they dispatch and by consumers to read it.
- ``contracts.subscriptions``: every consumer queue and the keys it binds (the routing contract).
- ``contracts.asyncapi``: the AsyncAPI 3.0 document generated from both (docs/asyncapi.json,
  and ``GET /api/asyncapi.json`` on the gateway).
"""
from contracts.events import (
    CONTRACTS, COURSE_CREATED, COURSE_ENROLLED, EVENT_TYPES, EXCHANGE, OWNERS, REVIEW_CREATED,
    USER_REGISTERED, Contract, ContractViolation, InvalidEventData, contract_for,
)
from contracts.subscriptions import SHELL_EVENT_EXCHANGES, SUBSCRIPTIONS

__all__ = ["CONTRACTS", "COURSE_CREATED", "COURSE_ENROLLED", "EVENT_TYPES", "EXCHANGE", "OWNERS",
           "REVIEW_CREATED", "SHELL_EVENT_EXCHANGES", "SUBSCRIPTIONS", "USER_REGISTERED",
           "Contract", "ContractViolation", "InvalidEventData", "contract_for"]
