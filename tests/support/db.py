"""Real databases in tests: an in-memory one for unit tests, and reading a service's own."""
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool


@contextmanager
def in_memory_session(metadata):
    """A session on a fresh in-memory database with ``metadata``'s tables."""
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    metadata.create_all(engine)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


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
