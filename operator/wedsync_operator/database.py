"""PostgreSQL access for the failover workflow and the region probes (an adapter at the edge).

psycopg is imported on first use: an operator whose plans have a single region, or that serves
only DatabaseOptimizationPolicies, never loads the driver (about 9 MB of memory). Every error
of the driver comes out as `DatabaseError`, with the driver's message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from wedsync_operator.domain.connection import Connection

if TYPE_CHECKING:
    import psycopg


class DatabaseError(Exception):
    """A PostgreSQL error (the connection failed, the statement was refused)."""


class Session:
    """One autocommit connection to a database."""

    def __init__(self, raw: psycopg.AsyncConnection[Any]) -> None:
        self._raw = raw

    async def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> None:
        import psycopg

        try:
            await self._raw.execute(sql, params)
        except psycopg.Error as error:
            raise DatabaseError(str(error)) from error

    async def row(self, sql: str, params: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
        """The first row of the result (empty when there is none)."""
        import psycopg

        try:
            cursor = await self._raw.execute(sql, params)
            found = await cursor.fetchone()
        except psycopg.Error as error:
            raise DatabaseError(str(error)) from error
        return tuple(found or ())

    async def rows(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Every row of the result."""
        import psycopg

        try:
            cursor = await self._raw.execute(sql, params)
            found = await cursor.fetchall()
        except psycopg.Error as error:
            raise DatabaseError(str(error)) from error
        return [tuple(r) for r in found]

    async def scalar(self, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        """The first column of the first row, or None."""
        found = await self.row(sql, params)
        return found[0] if found else None


@asynccontextmanager
async def session(conn: Connection, *, connect_timeout: int, application_name: str,
                  options: str | None = None) -> AsyncIterator[Session]:
    """A connection to `conn`'s database for the duration of the block."""
    import psycopg

    params: dict[str, Any] = {
        "host": conn.host, "port": conn.port, "user": conn.user,
        "password": conn.password or None, "dbname": conn.dbname,
        "connect_timeout": connect_timeout, "application_name": application_name}
    if options:
        params["options"] = options
    try:
        raw = await psycopg.AsyncConnection.connect(autocommit=True, **params)
    except psycopg.Error as error:
        raise DatabaseError(str(error)) from error
    try:
        yield Session(raw)
    finally:
        try:
            await raw.close()
        except psycopg.Error as error:
            raise DatabaseError(str(error)) from error
