"""Local credentials for a stack started by ``opsctl up``, so it is usable right after ``make run``.

- A super-admin token, only when ``OPS_AUTH`` is not set: kept in ``<workdir>/admin-token``
  (mode 0600, reused across runs); only its SHA-256 goes into ``<workdir>/auth.toml``, the file
  the gateway reads.
- A signing key for maintenance commands, only when ``OPS_KEYRING`` is not set: the private key
  in ``<workdir>/keys/local.pem`` (0600, reused), its public half in ``<workdir>/keyring.toml``
  with kid ``local`` allowed every action; ``opsctl cmd`` uses it when no ``--key`` is given.

Production sets ``OPS_AUTH`` and ``OPS_KEYRING`` itself and never gets either.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from shared import keyring_entry_toml, load_private_key, new_keypair

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
AUTH_FILE = "auth.toml"
LOCAL_KID = "local"
KEYRING_FILE = "keyring.toml"


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


def local_key_path(workdir: Path) -> Path:
    return workdir / "keys" / f"{LOCAL_KID}.pem"


def local_keyring(workdir: Path) -> tuple[Path, Path]:
    """``(keyring_file, private_key_file)`` for ``workdir``, creating the key on first use."""
    key_path = local_key_path(workdir)
    if key_path.exists():
        private = load_private_key(key_path.read_bytes(), source=str(key_path))
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        private_pem, public_pem = new_keypair()
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
    keyring_path = workdir / KEYRING_FILE
    keyring_path.write_text(
        "# Written by `opsctl up` for this local stack; the private key is keys/local.pem.\n"
        + keyring_entry_toml(LOCAL_KID, public_pem, ["*"])
    )
    return keyring_path, key_path
