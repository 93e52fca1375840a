"""The worker's keyring (``OPS_KEYRING``): which Ed25519 key may issue which actions.

```toml
[keys.ops-alice]                       # the JWT header kid
public_key = "-----BEGIN PUBLIC KEY-----\\n...\\n-----END PUBLIC KEY-----"
actions = ["backup.*", "db.*"]         # "*" = every action; "backup.*" covers backup.create
```

The same document as JSON (``{"keys": {"ops-alice": {...}}}``) is read from a ``.json`` file.
A bad file is a ``ConfigError`` naming the file and the key: a worker must not start with a
keyring it half understood.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._actions import ACTIONS
from ._errors import ConfigError

KID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*\.(\*|[a-z][a-z0-9_]*))$")
_FIELDS = frozenset({"public_key", "actions"})


def action_allowed(pattern: str, action: str) -> bool:
    """``"*"`` covers everything, ``"backup.*"`` every ``backup.<x>``, else an exact match."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return action.startswith(pattern[:-1])
    return pattern == action


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    public_key: Ed25519PublicKey
    actions: tuple[str, ...]

    def allows(self, action: str) -> bool:
        return any(action_allowed(pattern, action) for pattern in self.actions)


class Keyring:
    """Keys by ``kid``. Build with ``load`` (a file) or ``from_mapping`` (a parsed document)."""

    def __init__(self, keys: Mapping[str, KeyEntry], *, source: str = "<keyring>") -> None:
        self._keys = dict(keys)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a TOML keyring (JSON if the name ends in ``.json``)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"keyring {path}: cannot read: {exc}") from None
        try:
            data: Any = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            kind = "JSON" if str(path).endswith(".json") else "TOML"
            raise ConfigError(f"keyring {path}: not valid {kind}: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<keyring>") -> Keyring:
        if not isinstance(data, Mapping):
            raise ConfigError(f"keyring {source}: expected a table with [keys.<kid>] entries")
        unknown = sorted(set(data) - {"keys"})
        if unknown:
            raise ConfigError(f"keyring {source}: unknown top-level field(s) {unknown}")
        keys = data.get("keys")
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigError(f"keyring {source}: no keys (expected [keys.<kid>] entries)")
        return cls({kid: _entry(source, kid, spec) for kid, spec in keys.items()}, source=source)

    def get(self, kid: str) -> KeyEntry | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({self.source!r}, kids={self.kids})"


def _entry(source: str, kid: Any, spec: Any) -> KeyEntry:
    where = f"keyring {source}: key {kid!r}"
    if not isinstance(kid, str) or not KID.match(kid):
        raise ConfigError(f"{where}: a kid is 1-128 letters, digits, '.', '_' or '-'")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a table with public_key and actions")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (known: public_key, actions)")
    pem = spec.get("public_key")
    if not isinstance(pem, str) or not pem.strip():
        raise ConfigError(f"{where}: public_key is required (an Ed25519 public key, PEM)")
    try:
        public_key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: public_key is not a PEM public key ({exc})") from None
    if not isinstance(public_key, Ed25519PublicKey):
        kind = type(public_key).__name__.lstrip("_")
        raise ConfigError(f"{where}: public_key must be Ed25519, not {kind}")
    actions = spec.get("actions")
    if not isinstance(actions, list) or not actions:
        raise ConfigError(f"{where}: actions must be a non-empty list of patterns")
    for pattern in actions:
        if not isinstance(pattern, str) or not _PATTERN.match(pattern):
            raise ConfigError(
                f"{where}: bad action pattern {pattern!r} (use 'backup.create', 'backup.*' or '*')"
            )
        if not any(action_allowed(pattern, action) for action in ACTIONS):
            known = ", ".join(sorted(ACTIONS))
            raise ConfigError(f"{where}: pattern {pattern!r} matches no action (known: {known})")
    return KeyEntry(kid=kid, public_key=public_key, actions=tuple(actions))


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(pem: bytes, *, source: str = "private key") -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (unencrypted PKCS#8), or ``ConfigError`` saying why."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{source}: must be an Ed25519 key, not {type(key).__name__}")
    return key


def keyring_entry_toml(kid: str, public_pem: bytes, actions: list[str]) -> str:
    """The ``[keys.<kid>]`` block to paste into the keyring (validated by parsing it back)."""
    lines = [
        f"[keys.{kid if re.match(r'^[A-Za-z0-9_-]+$', kid) else json.dumps(kid)}]",
        f"public_key = {json.dumps(public_pem.decode().strip())}",
        f"actions = {json.dumps(list(actions))}",
    ]
    block = "\n".join(lines) + "\n"
    Keyring.from_mapping(tomllib.loads(block), source="entry")
    return block
