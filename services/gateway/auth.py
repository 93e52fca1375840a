"""Who may see what: tokens from the ``OPS_AUTH`` TOML file, as sha256 hashes.

```toml
[[tokens]]
sha256 = "<hex sha256 of the token>"
role = "super-admin"
[[tokens]]
sha256 = "<hex>"
role = "tenant"
tenant = "acme"
```

A request carries its token as ``Authorization: Bearer <token>`` or, for the browser page, HTTP
Basic (the token as the password; any user name, or the token as the user name with an empty
password). The token is hashed and compared with **every** configured hash using
``hmac.compare_digest`` (constant time, no early exit). No credentials: 401 with a challenge.
Unknown token or wrong role: 403. The file is re-read when it changes (at most every 2 s);
a broken new file keeps the previous one and is logged. Unset: no token is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import tomllib
from pathlib import Path
from typing import Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials, HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared import ConfigError, get_logger

log = get_logger(__name__)
Role = Literal["super-admin", "tenant"]
CHALLENGES = ('Basic realm="opsplane", charset="UTF-8"', 'Bearer realm="opsplane"')

# Both schemes show in the OpenAPI document; a malformed Basic header is a 401 too.
bearer_scheme = HTTPBearer(auto_error=False, description="a token from OPS_AUTH")
basic_scheme = HTTPBasic(auto_error=False, description="the token as the password")


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    role: Role
    tenant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,128}$")
    name: str = ""  # for the operator: whose token this is

    @model_validator(mode="after")
    def _tenant_iff_tenant_role(self) -> TokenEntry:
        if (self.role == "tenant") != (self.tenant is not None):
            raise ValueError("'tenant' is required for role tenant and only for it")
        return self


class AuthFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry] = Field(default_factory=list)


class Principal(BaseModel):
    role: Role
    tenant: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_auth_file(path: Path) -> AuthFile:
    try:
        return AuthFile.model_validate(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"OPS_AUTH {path}: {exc}") from exc


class AuthStore:
    def __init__(self, path: Path | None, *, recheck_s: float = 2.0) -> None:
        self._path = path
        self._recheck_s = recheck_s
        self._checked = time.monotonic()
        self._mtime = path.stat().st_mtime if path is not None else None
        self._file = load_auth_file(path) if path is not None else AuthFile()

    def _maybe_reload(self) -> None:
        if self._path is None or time.monotonic() - self._checked < self._recheck_s:
            return
        self._checked = time.monotonic()
        try:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime:
                self._file, self._mtime = load_auth_file(self._path), mtime
                log.info("auth.reloaded", tokens=len(self._file.tokens))
        except (OSError, ConfigError) as exc:
            log.error("auth.reload_failed", error=str(exc)[:300])

    def verify(self, token: str) -> Principal | None:
        self._maybe_reload()
        digest = token_hash(token)
        found: TokenEntry | None = None
        for entry in self._file.tokens:  # no early exit: the time does not tell which matched
            if hmac.compare_digest(digest, entry.sha256.lower()):
                found = entry
        return None if found is None else Principal(role=found.role, tenant=found.tenant)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": ", ".join(CHALLENGES)})


def presented_token(bearer: HTTPAuthorizationCredentials | None,
                    basic: HTTPBasicCredentials | None) -> str | None:
    if bearer is not None and bearer.scheme.lower() == "bearer" and bearer.credentials:
        return bearer.credentials
    if basic is not None:
        return basic.password or basic.username or None
    return None


async def principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    basic: HTTPBasicCredentials | None = Depends(basic_scheme),
) -> Principal:
    """The caller, or 401 (no usable credentials) / 403 (credentials we do not accept)."""
    token = presented_token(bearer, basic)
    if token is None:
        raise unauthorized("credentials required")
    store: AuthStore = request.app.state.gateway.auth
    found = store.verify(token)
    if found is None:
        raise HTTPException(403, "token not accepted")
    return found


async def super_admin(caller: Principal = Depends(principal)) -> Principal:
    if caller.role != "super-admin":
        raise HTTPException(403, "super-admin only")
    return caller
