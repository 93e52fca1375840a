"""The asyncpg pool, with driver errors mapped to ``DatabaseError`` at the boundary."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from ._errors import DatabaseError
from ._logging import scrub

# What a broken or unreachable database raises, across asyncpg's own errors and the OS's.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)


def describe(exc: BaseException) -> str:
    """A one-line description of a driver error that never contains the DSN's password."""
    text = str(exc) or type(exc).__name__
    return scrub(f"{type(exc).__name__}: {text}")[:500]


@contextmanager
def database_errors() -> Iterator[None]:
    """Driver errors raised inside the block become ``DatabaseError`` (our boundary)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise DatabaseError(describe(exc)) from exc


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 5,
    command_timeout_s: float = 30.0,
    connect_timeout_s: float = 5.0,
    application_name: str = "opsplane",
    **kwargs: Any,
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout_s,
            timeout=connect_timeout_s,
            server_settings={"application_name": application_name},
            **kwargs,
        )
    except DRIVER_ERRORS as exc:
        raise DatabaseError(describe(exc)) from exc
    assert pool is not None
    return pool


@asynccontextmanager
async def connect(
    dsn: str, *, timeout_s: float = 5.0, application_name: str = "opsplane"
) -> AsyncIterator[asyncpg.Connection]:
    """One short-lived connection, closed on exit; errors mapped to ``DatabaseError``."""
    try:
        conn = await asyncpg.connect(
            dsn, timeout=timeout_s, server_settings={"application_name": application_name}
        )
    except DRIVER_ERRORS as exc:
        raise DatabaseError(describe(exc)) from exc
    try:
        yield conn
    except DRIVER_ERRORS as exc:
        raise DatabaseError(describe(exc)) from exc
    finally:
        if not conn.is_closed():
            await _close_quietly(conn)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=2.0)
    except Exception:
        conn.terminate()


class Queries:
    """A pool's one-statement calls, with driver errors mapped to ``DatabaseError``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with database_errors():
            return list(await self.pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        with database_errors():
            return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with database_errors():
            return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        with database_errors():
            return str(await self.pool.execute(sql, *args))
