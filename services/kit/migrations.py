"""Alembic migrations, one history per service, in ``services/<name>/migrations/``.

Each service's ``migrations/env.py`` is two lines::

    from services.kit.migrations import run_migrations
    from services.<name>.models import Base
    run_migrations(Base.metadata)

and ``knowledge-nest migrate`` (what ``make run`` and the tests call) upgrades every database named
in ``DB_URIS`` to head. ``knowledge-nest makemigration <service> -m "..."`` writes a new revision
from the difference between the models and the database.
"""
import os

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from services.kit.db import create_engine_for, normalize_url

SERVICES_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_location(service_name):
    return os.path.join(SERVICES_DIR, service_name, "migrations")


def has_migrations(service_name):
    return os.path.isfile(os.path.join(script_location(service_name), "env.py"))


def alembic_config(service_name, db_uri):
    config = Config()
    config.set_main_option("script_location", script_location(service_name))
    config.set_main_option("version_locations",
                           os.path.join(script_location(service_name), "versions"))
    # kept as an attribute, not an ini option: "%" in a password would trip ConfigParser
    config.attributes["db_uri"] = db_uri
    return config


def upgrade(service_name, db_uri, revision="head"):
    command.upgrade(alembic_config(service_name, db_uri), revision)


def make_revision(service_name, db_uri, message):
    command.revision(alembic_config(service_name, db_uri), message=message, autogenerate=True)


def differences(db_uri, metadata):
    """What the database at ``db_uri`` lacks or has beyond ``metadata``; [] when they agree."""
    engine = create_engine_for(db_uri)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def run_migrations(target_metadata):
    """The body of every service's env.py."""
    from alembic import context
    db_uri = context.config.attributes["db_uri"]
    is_sqlite = normalize_url(db_uri).get_backend_name() == "sqlite"
    if context.is_offline_mode():
        context.configure(url=str(normalize_url(db_uri)), target_metadata=target_metadata,
                          literal_binds=True, render_as_batch=is_sqlite)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine_for(db_uri)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata,
                              compare_type=True,
                              render_as_batch=is_sqlite)  # SQLite cannot ALTER most things
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
