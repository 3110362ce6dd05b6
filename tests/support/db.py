"""Real databases in tests: an in-memory one for unit tests, and reading a service's own."""
import inspect
import sys
from contextlib import contextmanager
from types import SimpleNamespace

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from services.kit.db import end_transaction, map_conflicts
from services.kit.rpc import Rpc


@contextmanager
def in_memory_session(metadata):
    """A session on a fresh in-memory database with ``metadata``'s tables; its declared unique
    constraints raise their Conflict, as a service's Database makes them."""
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    map_conflicts(engine, metadata)
    metadata.create_all(engine)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def rpc_worker(service_cls, session, **dependencies):
    """nameko's ``worker_factory(service_cls)`` on ``session``, each ``@rpc`` method ending its
    transaction as the kit's entrypoint does (services/kit/rpc.py): committed if it returned,
    rolled back if it raised."""
    service = worker_factory(service_cls, db=SimpleNamespace(session=session), **dependencies)
    for name, function in inspect.getmembers(service_cls, inspect.isfunction):
        entrypoints = getattr(function, ENTRYPOINT_EXTENSIONS_ATTR, ())
        if any(isinstance(entrypoint, Rpc) for entrypoint in entrypoints):
            setattr(service, name, _one_transaction(getattr(service, name), session))
    return service


def _one_transaction(method, session):
    def run(*args, **kwargs):
        try:
            result, exc_info = method(*args, **kwargs), None
        except Exception:
            result, exc_info = None, sys.exc_info()
        exc_info = end_transaction(session, exc_info)
        if exc_info is not None:
            raise exc_info[1]
        return result
    return run


def query(url, statement):
    """Every row ``statement`` returns from the database at ``url`` (a service's URI as in
    config), on a connection of its own: what the test sees is what is committed."""
    from services.kit.db import normalize_url
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()
