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
