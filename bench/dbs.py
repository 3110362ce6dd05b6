"""The benchmark's databases: SQLite files in a temp dir, or throwaway PostgreSQL databases.

PostgreSQL ones are ``kn_bench_<run>_<name>`` on BENCH_POSTGRES_URL (default: the local server,
user postgres), created for the run and dropped after it (also when it fails).
"""
import os
from urllib.parse import urlparse

import pg8000.native
from sqlalchemy import text

from services.kit.db import create_engine_for

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_connection():
    url = urlparse(POSTGRES_URL)
    return pg8000.native.Connection(user=url.username or "postgres", password=url.password,
                                    host=url.hostname or "127.0.0.1", port=url.port or 5432,
                                    database=url.path.lstrip("/") or "postgres")


class Databases:
    """``url(name)`` for each database of a run; ``query(name, sql, **params)`` reads one."""

    def __init__(self, kind, run_name, tmp):
        if kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database kind {kind!r} (sqlite or postgresql)")
        self.kind, self.run_name, self.tmp = kind, run_name, tmp
        self.created = []
        self.engines = {}

    def url(self, name):
        if self.kind == "sqlite":
            return f"sqlite:///{os.path.join(self.tmp, name)}.db"
        base = urlparse(POSTGRES_URL)
        return base._replace(path=f"/{self.database_name(name)}").geturl()

    def database_name(self, name):
        return f"{self.run_name}_{name}"

    def create(self, *names, synchronous_commit=None):
        """``synchronous_commit``: set on these databases only (ALTER DATABASE), if given."""
        if self.kind != "postgresql":
            return
        conn = admin_connection()
        try:
            for name in names:
                database = self.database_name(name)
                conn.run(f'DROP DATABASE IF EXISTS "{database}"')
                conn.run(f'CREATE DATABASE "{database}"')
                self.created.append(database)
                if synchronous_commit:
                    conn.run(f'ALTER DATABASE "{database}" '
                             f'SET synchronous_commit = {synchronous_commit}')
        finally:
            conn.close()

    def engine(self, name):
        if name not in self.engines:
            self.engines[name] = create_engine_for(self.url(name), pool_size=1, max_overflow=2)
        return self.engines[name]

    def query(self, name, sql, **params):
        with self.engine(name).connect() as conn:
            rows = conn.execute(text(sql), params).fetchall()
            conn.rollback()
        return rows

    def scalar(self, name, sql, **params):
        return self.query(name, sql, **params)[0][0]

    def size_bytes(self, name):
        if self.kind == "postgresql":
            return self.scalar(name, "SELECT pg_database_size(current_database())")
        path = os.path.join(self.tmp, f"{name}.db")
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def drop_all(self):
        for engine in self.engines.values():
            engine.dispose()
        self.engines.clear()
        if not self.created:
            return
        conn = admin_connection()
        try:
            for database in self.created:
                conn.run(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            conn.close()
        self.created.clear()
