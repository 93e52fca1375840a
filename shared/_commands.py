"""Signed maintenance commands (DESIGN.md, "Signed commands"): sign and verify.

A command is a compact JWS, alg ``EdDSA`` (Ed25519), header ``kid``; claims ``iss``, ``aud``,
``iat``, ``exp`` (at most 15 min after ``iat``), ``jti`` (a UUID: the job id and replay key),
``act``, ``params`` and, for destructive actions, ``target``. ``verify_command`` either returns a
``VerifiedCommand`` or raises ``CommandRejected`` with one of ``REJECTION_REASONS``; no PyJWT,
JSON or cryptography exception ever escapes it. The replay check (``replayed``) is the worker's:
it needs the durable store.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._actions import ACTIONS, DESTRUCTIVE_ACTIONS, ActionParams, parse_params
from ._errors import CommandRejected
from ._keyring import Keyring, load_private_key

MAX_TOKEN_BYTES = 16 * 1024
MAX_LIFETIME_S = 15 * 60
ALGORITHM = "EdDSA"

# Every reason a command can be refused, with what to do about it (docs/commands.md).
REJECTION_REASONS: dict[str, str] = {
    "malformed": "not a compact JWS with a JSON object of the expected claims",
    "bad_signature": "the signature does not verify with the kid's key, or alg is not EdDSA",
    "unknown_kid": "the header kid is not in the worker's keyring",
    "wrong_audience": "aud is not this deployment (OPS_DEPLOYMENT)",
    "expired": "exp has passed (beyond the clock skew)",
    "not_yet_valid": "iat or nbf is in the future (beyond the clock skew)",
    "lifetime_too_long": "exp is more than 15 minutes after iat",
    "action_not_allowed": "the key's actions patterns do not cover act",
    "subject_mismatch": "the subject's action differs from the act claim",
    "unknown_action": "act is not a known action",
    "bad_params": "params fail the action's validation",
    "target_required": "a destructive action without a valid target claim",
    "replayed": "this jti was seen before",
}

_COMPACT = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "exp", "nbf", "jti", "act", "params", "target"})
_MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z


class Target(BaseModel):
    """The database a destructive command was signed for (``pg_control_system()``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    system_identifier: str = Field(pattern=r"^[0-9]{1,20}$")
    database: str = Field(min_length=1, max_length=63, pattern=r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class VerifiedCommand:
    jti: str
    action: str
    issuer: str
    kid: str
    issued_at: datetime
    expires_at: datetime
    params: ActionParams
    target: Target | None
    raw_claims: Mapping[str, Any] = field(repr=False)


def _reject(reason: str, message: str) -> CommandRejected:
    return CommandRejected(reason, message)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise _reject("malformed", f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _reject("malformed", f"the {what} is not a JSON object")
    return value


def _b64(segment: bytes, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _reject("malformed", f"the {what} is not base64url") from None


def _time(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _reject("malformed", f"the {name} claim is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _reject("malformed", f"{name} must be a number of seconds since the epoch")
    if not math.isfinite(value) or not 0 <= value <= _MAX_TIME:
        raise _reject("malformed", f"{name} is out of range")
    return float(value)


def _header(token: bytes) -> dict[str, Any]:
    header = _json_object(_b64(token.split(b".", 1)[0], "header"), "header")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise _reject("bad_signature", f"alg {alg!r} is not accepted; commands are signed EdDSA")
    if "crit" in header or "b64" in header:
        raise _reject("malformed", "critical header parameters (crit, b64) are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _reject("malformed", "the header has no kid")
    return header


def _as_bytes(token: str | bytes) -> bytes:
    if isinstance(token, str):
        try:
            token = token.encode("ascii")
        except UnicodeEncodeError:
            raise _reject("malformed", "a compact JWS is ASCII only") from None
    if not isinstance(token, bytes | bytearray):
        raise _reject("malformed", "the token must be a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise _reject("malformed", f"the token is over {MAX_TOKEN_BYTES} bytes")
    token = bytes(token).strip()
    if not _COMPACT.match(token):
        raise _reject("malformed", "not a compact JWS (three base64url parts joined by '.')")
    return token


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def verify_command(
    token: str | bytes,
    *,
    subject_action: str,
    keyring: Keyring,
    audience: str,
    now: datetime | None = None,
    skew_s: float = 60.0,
) -> VerifiedCommand:
    """Check a command's signature, key, audience, times, action, params and target.

    ``subject_action`` is the action from the subject it arrived on (``ops.cmd.<action>``).
    Raises ``CommandRejected`` (``.reason`` one of ``REJECTION_REASONS``) on any failure.
    """
    at = _utc(now).timestamp()
    raw = _as_bytes(token)
    header = _header(raw)
    kid: str = header["kid"]
    entry = keyring.get(kid)
    if entry is None:
        raise _reject("unknown_kid", f"key {kid!r} is not in the keyring")
    try:
        decoded = jwt.PyJWS().decode_complete(raw, key=entry.public_key, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        raise _reject("bad_signature", f"the signature does not verify with key {kid!r}") from None
    except jwt.InvalidAlgorithmError:
        raise _reject("bad_signature", "alg is not accepted; commands are signed EdDSA") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise _reject("malformed", f"not a valid JWS: {exc}") from None
    claims = _json_object(decoded["payload"], "claims")

    unknown = sorted(set(claims) - _CLAIMS)
    if unknown:
        raise _reject("malformed", f"unknown claim(s) {unknown}")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not 0 < len(issuer) <= 200:
        raise _reject("malformed", "iss must be a non-empty string (who signed)")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise _reject("wrong_audience", f"aud {aud!r} is not this deployment ({audience!r})")

    issued = _time(claims, "iat", required=True)
    expires = _time(claims, "exp", required=True)
    not_before = _time(claims, "nbf", required=False)
    assert issued is not None and expires is not None
    if expires <= issued:
        raise _reject("malformed", "exp must be after iat")
    if expires - issued > MAX_LIFETIME_S:
        raise _reject(
            "lifetime_too_long",
            f"exp is {expires - issued:.0f} s after iat (at most {MAX_LIFETIME_S} s)",
        )
    if at >= expires + skew_s:
        raise _reject("expired", f"expired {at - expires:.0f} s ago")
    if issued > at + skew_s:
        raise _reject("not_yet_valid", f"iat is {issued - at:.0f} s in the future")
    if not_before is not None and not_before > at + skew_s:
        raise _reject("not_yet_valid", f"nbf is {not_before - at:.0f} s in the future")

    jti = claims.get("jti")
    if not isinstance(jti, str) or not _UUID.match(jti):
        raise _reject("malformed", "jti must be a lowercase UUID (the job id)")
    action = claims.get("act")
    if not isinstance(action, str) or not action:
        raise _reject("malformed", "act must be a non-empty string (the action)")
    if action != subject_action:
        raise _reject(
            "subject_mismatch", f"sent on ops.cmd.{subject_action} but act is {action!r}"
        )
    if action not in ACTIONS:
        parse_params(action, {})  # raises unknown_action, naming the known ones
    if not entry.allows(action):
        raise _reject("action_not_allowed", f"key {kid!r} may not issue {action!r}")
    params = parse_params(action, claims.get("params", {}))  # bad_params

    target = _target(claims.get("target"), action)
    return VerifiedCommand(
        jti=jti,
        action=action,
        issuer=issuer,
        kid=kid,
        issued_at=datetime.fromtimestamp(issued, UTC),
        expires_at=datetime.fromtimestamp(expires, UTC),
        params=params,
        target=target,
        raw_claims=claims,
    )


def _target(value: Any, action: str) -> Target | None:
    if value is None:
        if action in DESTRUCTIVE_ACTIONS:
            raise _reject(
                "target_required",
                f"{action} is destructive: the target claim (system_identifier, database) "
                "is required",
            )
        return None
    try:
        return Target.model_validate(value)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise _reject("target_required", f"the target claim is invalid: {detail}") from None


def sign_command(
    action: str,
    params: Mapping[str, Any],
    *,
    private_key_pem: bytes,
    kid: str,
    issuer: str,
    audience: str = "opsplane",
    lifetime_s: int = 300,
    target: Target | None = None,
    jti: str | None = None,
    now: datetime | None = None,
) -> str:
    """A signed command token. Refuses (``CommandRejected``) what a worker would refuse:
    unknown action, bad params, lifetime over 15 min, a destructive action without target.
    A bad private key is a ``ConfigError``."""
    model = parse_params(action, params)
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise _reject("lifetime_too_long", f"lifetime must be 1..{MAX_LIFETIME_S} s")
    if action in DESTRUCTIVE_ACTIONS and target is None:
        raise _reject("target_required", f"{action} is destructive: pass target=Target(...)")
    if not kid or not issuer:
        raise _reject("malformed", "kid and issuer are required")
    jti = jti or str(uuid.uuid4())
    if not _UUID.match(jti):
        raise _reject("malformed", "jti must be a lowercase UUID")
    issued = int(_utc(now).timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti,
        "act": action,
        "params": model.model_dump(mode="json", exclude_unset=True),
    }
    if target is not None:
        claims["target"] = target.model_dump(mode="json")
    key = load_private_key(private_key_pem)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
