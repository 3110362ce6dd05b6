"""A real database for unit tests: in-memory SQLite, one connection shared by every session."""
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
