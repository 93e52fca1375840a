"""pg_dump / pg_restore: finding them, checking their version, running them safely.

The DSN's password never goes on a child's argv (``ps`` shows argv to every local user): the
child gets the DSN without it and the password in ``PGPASSWORD``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from shared import ConfigError, scrub

from .errors import BackupError

APPLICATION_NAME = "opsplane-backup"
STDERR_LIMIT = 8192  # bytes of a child's stderr kept for the error message
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)(?:\.\d+)*)")


@dataclass(frozen=True)
class ConnInfo:
    """A DSN split into what may be shown (``url``) and what may not (``password``)."""

    url: str
    password: str | None
    database: str
    user: str | None


def split_dsn(dsn: str) -> ConnInfo:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError("database DSN must be a postgresql:// URL")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, raw_password = userinfo.partition(":")
    password = unquote(raw_password) if colon else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = []
    for name, value in query:
        if name == "password":
            password = value
        else:
            kept.append((name, value))
    params = dict(kept)
    netloc = f"{user}{at}{hostport}" if user else hostport
    url = urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept)))
    database = unquote(parts.path.lstrip("/")) or params.get("dbname") or ""
    user_name = unquote(user) or params.get("user") or None
    if not database:
        database = os.environ.get("PGDATABASE") or user_name or os.environ.get("PGUSER") or ""
    if not database:
        raise ConfigError("database DSN names no database")
    return ConnInfo(url=url, password=password, database=database, user=user_name)


def with_database(dsn: str, database: str) -> str:
    """The same DSN (password and all) pointing at another database."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dbname"]
    path = "/" + database.replace("%", "%25").replace("/", "%2F").replace("?", "%3F")
    return urlunsplit(parts._replace(path=path, query=urlencode(query)))


def child_env(conn: ConnInfo) -> dict[str, str]:
    env = dict(os.environ)
    env["PGAPPNAME"] = APPLICATION_NAME
    env.pop("PGPASSWORD", None)
    if conn.password is not None:
        env["PGPASSWORD"] = conn.password
    return env


def parse_version(text: str) -> tuple[int, str]:
    match = _VERSION.search(text)
    if not match:
        raise BackupError(f"cannot read a PostgreSQL version from {text.strip()[:200]!r}")
    return int(match[2]), match[1]


@dataclass(frozen=True)
class PgTools:
    """A directory with pg_dump and pg_restore, and pg_dump's version."""

    bin_dir: Path
    version: str
    major: int

    @property
    def pg_dump(self) -> str:
        return str(self.bin_dir / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.bin_dir / "pg_restore")


def candidate_bin_dirs() -> list[Path]:
    """Where to look by default: PATH's pg_dump, pgserver's binaries, Debian's versioned dirs."""
    found: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).parent)
    try:
        import pgserver  # the local extra ships postgres, pg_dump and pg_restore

        found.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    found.extend(Path(p) for p in versioned if p.split("/")[-2].isdigit())
    unique: list[Path] = []
    for path in found:
        if path not in unique and (path / "pg_dump").exists():
            unique.append(path)
    return unique


async def tool_version(binary: str) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    except OSError as exc:
        raise BackupError(f"cannot run {binary}: {exc}") from exc
    if proc.returncode != 0:
        raise BackupError(f"{binary} --version exited {proc.returncode}: {err.decode()[:200]}")
    return parse_version(out.decode(errors="replace"))


async def resolve_tools(min_major: int, against: str, bin_dir: Path | None) -> PgTools:
    """pg_dump/pg_restore whose major version is >= ``min_major``, or a clear error.

    ``against`` names what sets the minimum (e.g. ``"the server (PostgreSQL 16.2)"``). With
    ``bin_dir`` only that directory is considered; without, the first suitable one of
    :func:`candidate_bin_dirs`."""
    dirs = [bin_dir] if bin_dir is not None else candidate_bin_dirs()
    if not dirs:
        raise BackupError("pg_dump not found (install the PostgreSQL client, or set the bin dir)")
    seen: list[str] = []
    for directory in dirs:
        for tool in ("pg_dump", "pg_restore"):
            if not (directory / tool).exists():
                raise BackupError(f"{tool} not found in {directory}")
        major, version = await tool_version(str(directory / "pg_dump"))
        if major >= min_major:
            return PgTools(bin_dir=directory, version=version, major=major)
        seen.append(f"pg_dump {version} in {directory}")
    raise BackupError(
        f"pg_dump/pg_restore are older than {against}: found "
        + ", ".join(seen)
        + f"; their major version must be >= {min_major} "
        f"(install postgresql-client-{min_major} or point the pg bin dir at it)"
    )


class StderrTail:
    """Drains a child's stderr, keeping its last ``limit`` bytes for the error message."""

    def __init__(self, stream: asyncio.StreamReader | None, limit: int = STDERR_LIMIT) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._task = asyncio.ensure_future(self._drain(stream)) if stream is not None else None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._buffer += chunk
            if len(self._buffer) > self._limit:
                del self._buffer[: len(self._buffer) - self._limit]

    async def text(self) -> str:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        return scrub(self._buffer.decode(errors="replace").strip())


async def kill_quietly(proc: asyncio.subprocess.Process | None) -> None:
    """Kill a child if it still runs and reap it (no zombie, no open pipe), also while the
    caller is being cancelled. Its stdout is drained: asyncio (3.11) only reports a child's
    exit once its pipes reached EOF, and an unread, paused pipe never does."""
    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    async def reap() -> None:
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        if proc.stdout is not None:
            with contextlib.suppress(Exception):
                while await proc.stdout.read(1024 * 1024):
                    pass
        await proc.wait()

    with contextlib.suppress(Exception):
        await asyncio.shield(asyncio.wait_for(reap(), timeout=30))


def exit_description(tool: str, returncode: int | None, stderr: str) -> str:
    if returncode is not None and returncode < 0:
        how = f"{tool} was killed by signal {-returncode}"
    else:
        how = f"{tool} exited {returncode}"
    return f"{how}: {stderr[-1500:]}" if stderr else how
