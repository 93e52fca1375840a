"""A super-admin token for a local stack, so the status page works right after ``make run``.

Only when ``OPS_AUTH`` is not set: the token is kept in ``<workdir>/admin-token`` (mode 0600,
reused across runs) and only its SHA-256 goes into ``<workdir>/auth.toml``, the file the
gateway reads. Production sets ``OPS_AUTH`` itself and never gets one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
AUTH_FILE = "auth.toml"


def local_admin_token(workdir: Path) -> tuple[Path, Path]:
    """``(auth_file, token_file)`` for ``workdir``, creating the token on first use."""
    token_path = workdir / TOKEN_FILE
    token = token_path.read_text().strip() if token_path.exists() else ""
    if not token:
        token = secrets.token_urlsafe(32)
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    digest = hashlib.sha256(token.encode()).hexdigest()
    auth_path = workdir / AUTH_FILE
    auth_path.write_text(
        "# Written by `opsctl up` for this local stack; the token is in admin-token.\n"
        f'[[tokens]]\nsha256 = "{digest}"\nrole = "super-admin"\n'
    )
    return auth_path, token_path


def read_local_token(workdir: Path) -> str | None:
    path = workdir / TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
