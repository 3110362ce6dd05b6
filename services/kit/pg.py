"""pg8000, one round trip per statement.

pg8000 (1.31) runs every statement that has parameters, and every COMMIT and ROLLBACK, as three
round trips: Parse + Sync and wait, Describe + Sync and wait, Bind + Execute + Sync and wait.
None of the later messages depends on an answer to an earlier one (pg8000 binds parameters as
text with the types it chose itself, and asks for every result column as text), so
``PipelinedConnection`` writes Parse, Bind, Describe (of the portal), Execute and Sync at once
and reads the answers in one pass: the same messages and handlers, one wait. An error in any
step makes the server skip to the Sync and answer ErrorResponse then ReadyForQuery, which that
pass reads as before.

And the ``BEGIN`` pg8000 sends before a transaction's first statement, a round trip of its own,
goes with that statement instead: Parse, Bind and Execute of ``BEGIN`` ahead of the statement's
messages, under the statement's one Sync (a statement without parameters, which pg8000 sends as
a simple Query, gets ``BEGIN;`` in front). In both, a failing ``BEGIN`` makes the server skip
the statement, so nothing ever runs outside the transaction it was meant for. A one-query read
in a transaction is then two round trips (the SELECT, the COMMIT), a write of three statements
four, and a read-only method's query one (no transaction at all: services/kit/db.py).
A ``SET LOCAL`` run first in a transaction (``commit_without_flush_wait`` in
services/kit/db.py) waits with the BEGIN and goes with them: no round trip of its own either.

``create_engine_for`` (services/kit/db.py) makes every PostgreSQL engine connect with it.

Also: pg8000 rewrites each statement's ``%s`` placeholders into ``$1, $2, ...`` by walking it
character by character in Python, every time (70-90 µs for one of SQLAlchemy's INSERTs here,
about ten statements per enrollment). In the ``format`` style SQLAlchemy uses, the rewrite
depends on the statement alone, so it is cached here (``pg8000.legacy.convert_paramstyle`` is
replaced in this process by a version that gives the same answers).

And: pg8000 reads every timestamp and date column with ``datetime.strptime`` (35 µs each here;
``fromisoformat``, 1 µs, reads the same ISO text PostgreSQL sends): ~7 ms of the analytics
summary's 14 went to its 200 minute timestamps. ``PipelinedConnection`` reads them with
``fromisoformat`` and falls back to pg8000's converter for what it does not read (years beyond
9999 or BC, ``infinity``), so the values are pg8000's own.
"""
import datetime as dt
import functools

import pg8000.legacy
from pg8000 import converters
from pg8000.core import (
    BIND, DESCRIBE, EXECUTE_MSG, NULL_BYTE, PARSE, PORTAL, SYNC_MSG, Context, H_pack,
    InterfaceError, _flush, _write, i_pack, make_params,
)


def _iso_reader(parse, fallback):
    def read(text):
        try:
            return parse(text)
        except ValueError:
            return fallback(text)
    return read


ISO_READERS = {
    converters.TIMESTAMPTZ: _iso_reader(dt.datetime.fromisoformat, converters.timestamptz_in),
    converters.TIMESTAMP: _iso_reader(dt.datetime.fromisoformat, converters.timestamp_in),
    converters.DATE: _iso_reader(dt.date.fromisoformat, converters.date_in),
}


BEGIN = "begin transaction"  # what pg8000's cursor sends before a transaction's first statement
NO_PARAMETERS_BIND = NULL_BYTE + NULL_BYTE + H_pack(0) + H_pack(0) + H_pack(0)


@functools.lru_cache(maxsize=64)
def _parse_without_parameters(statement):
    return NULL_BYTE + statement.encode("ascii") + NULL_BYTE + H_pack(0)


class PipelinedConnection(pg8000.legacy.Connection):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # BEGIN asked for, then the SET LOCALs run before anything else: sent with the next
        # statement (empty: no transaction is waiting to start)
        self._prologue = []
        for oid, read in ISO_READERS.items():
            self.register_in_adapter(oid, read)

    def _take_prologue(self):
        """What the next statement must send first: the BEGIN pg8000 asked for and the SET
        LOCALs since (nothing if no transaction is waiting to start)."""
        prologue, self._prologue = self._prologue, []
        return prologue if not self.autocommit and not self._in_transaction else []

    def execute_simple(self, statement):
        if statement == BEGIN and not self.autocommit:
            # asked for again before every statement until one has run: keep what waits
            self._prologue = self._prologue or [BEGIN]
            return Context(statement)
        if self._prologue and statement.upper().startswith("SET LOCAL "):
            # it only changes the transaction that the next statement runs in: it goes with it
            self._prologue.append(statement)
            return Context(statement)
        prologue = self._take_prologue()
        if not prologue:
            return super().execute_simple(statement)
        if self._sock is None:
            raise InterfaceError("connection is closed")
        context = Context(statement)
        # one simple Query: a statement that fails skips the rest of its string
        self.send_QUERY(";\n".join([*prologue, statement]))
        _flush(self._sock)
        self.handle_messages(context)
        return context

    def rollback(self):
        self._prologue = []  # a transaction that ran nothing has nothing to undo
        super().rollback()

    def commit(self):
        # pg8000 sends COMMIT even outside a transaction (autocommit, or nothing run since the
        # last one): a round trip for the server's "no transaction in progress" warning
        self._prologue = []
        if self._in_transaction:
            super().commit()

    def execute_unnamed(self, statement, vals=(), oids=(), stream=None):
        if self._sock is None:
            raise InterfaceError("connection is closed")
        context = Context(statement, stream=stream)
        # under the statement's Sync: an error in the prologue skips the statement
        for prior in self._take_prologue():
            self._send_message(PARSE, _parse_without_parameters(prior))
            self._send_message(BIND, NO_PARAMETERS_BIND)
            _write(self._sock, EXECUTE_MSG)
        encoding = self._client_encoding
        parse = bytearray(NULL_BYTE + statement.encode(encoding) + NULL_BYTE)
        parse.extend(H_pack(len(oids)))
        for oid in oids:
            parse.extend(i_pack(0 if oid == -1 else oid))
        self._send_message(PARSE, parse)
        params = make_params(self.py_types, vals)
        bind = bytearray(NULL_BYTE + NULL_BYTE + H_pack(0) + H_pack(len(params)))
        for value in params:
            if value is None:
                bind.extend(i_pack(-1))
            else:
                encoded = value.encode(encoding)
                bind.extend(i_pack(len(encoded)))
                bind.extend(encoded)
        bind.extend(H_pack(0))  # no result format codes: every column as text
        self._send_message(BIND, bind)
        self._send_message(DESCRIBE, PORTAL + NULL_BYTE)
        _write(self._sock, EXECUTE_MSG)
        _write(self._sock, SYNC_MSG)
        _flush(self._sock)
        self.handle_messages(context)
        return context


_convert_paramstyle = pg8000.legacy.convert_paramstyle


@functools.lru_cache(maxsize=4096)
def _format_statement(statement):
    return _convert_paramstyle("format", statement, ())[0]


def convert_paramstyle(style, query, args):
    """pg8000's, cached for the ``format`` style (whose values are the arguments as given)."""
    if style == "format":
        return _format_statement(query), args
    return _convert_paramstyle(style, query, args)


pg8000.legacy.convert_paramstyle = convert_paramstyle


def connect(_dialect, _connection_record, cargs, cparams):
    """A ``do_connect`` listener: the engine's connections are PipelinedConnections."""
    return PipelinedConnection(*cargs, **cparams)
