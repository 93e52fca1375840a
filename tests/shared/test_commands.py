"""Signed commands: a round trip, and every rejection reason with a real token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import (
    MAX_TOKEN_BYTES,
    REJECTION_REASONS,
    BackfillTenantIds,
    CommandRejected,
    ConfigError,
    Keyring,
    Target,
    VerifiedCommand,
    load_private_key,
    new_keypair,
    sign_command,
    verify_command,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PRIVATE, PUBLIC = new_keypair()
OTHER_PRIVATE, _ = new_keypair()
TARGET = Target(system_identifier="7312345678901234567", database="app")
KEYRING = Keyring.from_mapping(
    {
        "keys": {
            "ops-alice": {"public_key": PUBLIC.decode(), "actions": ["backup.*", "db.*"]},
            "admin-bob": {"public_key": PUBLIC.decode(), "actions": ["*"]},
        }
    }
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(action: str = "db.report", params: dict[str, Any] | None = None, **kw: Any) -> str:
    kw.setdefault("kid", "admin-bob")
    kw.setdefault("issuer", "alice@example.com")
    kw.setdefault("now", NOW)
    return sign_command(action, params or {}, private_key_pem=PRIVATE, **kw)


def raw_token(claims: dict[str, Any], *, key: bytes = PRIVATE, kid: str = "admin-bob") -> str:
    """A token with exactly ``claims`` (bypassing sign_command's own checks)."""
    return jwt.encode(claims, load_private_key(key), algorithm="EdDSA", headers={"kid": kid})


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "alice@example.com",
        "aud": "opsplane",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 300,
        "jti": str(uuid.uuid4()),
        "act": "db.report",
        "params": {},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def verify(token: str | bytes, action: str = "db.report", **kw: Any) -> VerifiedCommand:
    kw.setdefault("keyring", KEYRING)
    kw.setdefault("audience", "opsplane")
    kw.setdefault("now", NOW)
    return verify_command(token, subject_action=action, **kw)


def reason(token: str | bytes, action: str = "db.report", **kw: Any) -> str:
    with pytest.raises(CommandRejected) as info:
        verify(token, action, **kw)
    error = info.value
    assert error.reason in REJECTION_REASONS
    assert str(error) and str(error) != error.reason  # a human explanation, not just the code
    return error.reason


def test_round_trip() -> None:
    jti = str(uuid.uuid4())
    token = sign(
        "backfill.tenant_ids", {"batch_size": 500}, jti=jti, lifetime_s=600, kid="ops-alice"
    )
    with pytest.raises(CommandRejected):  # ops-alice may not issue backfill.*: sanity of setup
        verify(token, "backfill.tenant_ids")
    token = sign("backfill.tenant_ids", {"batch_size": 500}, jti=jti, lifetime_s=600)
    command = verify(token, "backfill.tenant_ids")
    assert command.jti == jti
    assert command.action == "backfill.tenant_ids"
    assert command.issuer == "alice@example.com"
    assert command.kid == "admin-bob"
    assert command.issued_at == NOW
    assert command.expires_at == NOW + timedelta(seconds=600)
    assert isinstance(command.params, BackfillTenantIds)
    assert (command.params.batch_size, command.params.dry_run) == (500, False)
    assert command.target is None
    assert command.raw_claims["params"] == {"batch_size": 500}
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == "admin-bob"


def test_round_trip_of_a_destructive_action_with_target_and_bytes_body() -> None:
    params = {"scope": "tenant", "tenant_id": "acme", "confirm": "acme"}
    token = sign("purge.app_data", params, target=TARGET)
    command = verify(token.encode() + b"\n", "purge.app_data")  # a body with a trailing newline
    assert command.target == TARGET
    assert command.params.model_dump() == {**params, "dry_run": False}


def test_a_token_is_valid_within_the_skew_and_at_real_time() -> None:
    token = sign(now=None)
    assert verify(token, now=None).action == "db.report"
    assert verify(sign(), now=NOW + timedelta(seconds=300 + 59)).action == "db.report"
    assert verify(sign(), now=NOW - timedelta(seconds=59)).action == "db.report"


def test_other_libraries_tokens_with_a_list_audience_and_nbf_verify() -> None:
    token = raw_token(claims(aud=["staging", "opsplane"], nbf=int(NOW.timestamp())))
    assert verify(token).action == "db.report"


# ---- every rejection reason ------------------------------------------------------------------


def test_signed_by_another_key_is_bad_signature() -> None:
    token = sign_command(
        "db.report", {}, private_key_pem=OTHER_PRIVATE, kid="admin-bob", issuer="x", now=NOW
    )
    assert reason(token) == "bad_signature"


def test_tampered_payload_is_bad_signature() -> None:
    header, _, signature = sign("backup.create", {"label": "nightly"}).split(".")
    forged = claims(act="purge.app_data", params={"scope": "all", "confirm": "CONFIRM"})
    token = f"{header}.{b64(json.dumps(forged).encode())}.{signature}"
    assert reason(token, "purge.app_data") == "bad_signature"


def test_tampered_signature_is_bad_signature() -> None:
    token = sign()
    head, body, signature = token.split(".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
    flipped[0] ^= 1
    assert reason(f"{head}.{body}.{b64(bytes(flipped))}") == "bad_signature"


def test_unknown_kid() -> None:
    assert reason(sign(kid="mallory")) == "unknown_kid"


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "admin-bob"}).encode())
    body = b64(json.dumps(claims()).encode())
    assert reason(f"{header}.{body}.") == "bad_signature"


def test_hs256_tokens_are_refused_even_keyed_with_the_public_key() -> None:
    assert reason(jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "admin-bob"}))
    # The classic confusion: HMAC keyed with the (public) PEM the verifier holds.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "admin-bob"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(PUBLIC, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert reason(f"{header}.{body}.{b64(mac)}") == "bad_signature"


def test_wrong_audience() -> None:
    assert reason(sign(audience="staging")) == "wrong_audience"
    assert reason(sign(), audience="production") == "wrong_audience"
    assert reason(raw_token(claims(aud=None))) == "wrong_audience"


def test_expired_beyond_the_skew() -> None:
    assert reason(sign(lifetime_s=60), now=NOW + timedelta(seconds=121)) == "expired"
    assert reason(sign(now=NOW - timedelta(hours=1))) == "expired"


def test_iat_in_the_future_is_not_yet_valid() -> None:
    assert reason(sign(now=NOW + timedelta(seconds=61))) == "not_yet_valid"


def test_nbf_in_the_future_is_not_yet_valid() -> None:
    token = raw_token(claims(nbf=int(NOW.timestamp()) + 120))
    assert reason(token) == "not_yet_valid"


def test_lifetime_over_15_minutes() -> None:
    iat = int(NOW.timestamp())
    assert reason(raw_token(claims(exp=iat + 15 * 60 + 1))) == "lifetime_too_long"
    assert verify(raw_token(claims(exp=iat + 15 * 60))).action == "db.report"
    with pytest.raises(CommandRejected) as info:
        sign(lifetime_s=901)
    assert info.value.reason == "lifetime_too_long"


@pytest.mark.parametrize(
    "bad",
    [
        {"exp": None},
        {"iat": None},
        {"iat": "2024-05-01T12:00:00Z"},
        {"iat": True},
        {"exp": 1e300},
        {"exp": int(NOW.timestamp()) - 1},
        {"jti": None},
        {"jti": "1234"},
        {"jti": str(uuid.uuid4()).upper()},
        {"jti": "{" + str(uuid.uuid4()) + "}"},
        {"iss": None},
        {"iss": ""},
        {"act": None},
        {"act": 7},
        {"surprise": "claim"},
        {"target": "app"},
    ],
    ids=repr,
)
def test_malformed_claims(bad: dict[str, Any]) -> None:
    assert reason(raw_token(claims(**bad))) in {"malformed", "target_required"}


def test_non_uuid_jti_is_malformed() -> None:
    assert reason(raw_token(claims(jti="not-a-uuid"))) == "malformed"
    with pytest.raises(CommandRejected):
        sign(jti="not-a-uuid")


def test_act_not_allowed_by_the_key() -> None:
    params = {"scope": "all", "confirm": "CONFIRM"}
    token = sign("purge.app_data", params, kid="ops-alice", target=TARGET)
    assert reason(token, "purge.app_data") == "action_not_allowed"
    token = sign("backfill.tenant_ids", kid="ops-alice")
    assert reason(token, "backfill.tenant_ids") == "action_not_allowed"
    assert verify(sign("db.vacuum", kid="ops-alice"), "db.vacuum").action == "db.vacuum"


def test_subject_mismatch() -> None:
    token = sign("backup.create")
    assert reason(token, "purge.app_data") == "subject_mismatch"


def test_unknown_action() -> None:
    assert reason(raw_token(claims(act="db.drop")), "db.drop") == "unknown_action"
    with pytest.raises(CommandRejected) as info:
        sign("db.drop")
    assert info.value.reason == "unknown_action"


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("db.report", {"unknown": 1}),
        ("backfill.tenant_ids", {"batch_size": 0}),
        ("backup.verify", {"mode": "sloppy"}),
        ("purge.app_data", {"scope": "all", "confirm": "yes"}),
        ("purge.app_data", {"scope": "tenant", "tenant_id": "acme", "confirm": "CONFIRM"}),
        ("purge.app_data", {"scope": "tenant", "confirm": "acme"}),
        ("backup.restore", {"key": "k.dump", "database": "prod", "confirm": "staging"}),
        ("db.report", "not an object"),
    ],
)
def test_bad_params(action: str, params: Any) -> None:
    target = {"system_identifier": "1", "database": "app"}
    token = raw_token(claims(act=action, params=params, target=target))
    assert reason(token, action) == "bad_params"


def test_destructive_without_target() -> None:
    params = {"scope": "all", "confirm": "CONFIRM"}
    token = raw_token(claims(act="purge.app_data", params=params))
    assert reason(token, "purge.app_data") == "target_required"
    bad_target = {"system_identifier": "prod", "database": "app"}
    token = raw_token(claims(act="purge.app_data", params=params, target=bad_target))
    assert reason(token, "purge.app_data") == "target_required"
    with pytest.raises(CommandRejected) as info:
        sign("purge.app_data", params)
    assert info.value.reason == "target_required"


def test_oversized_token_is_malformed() -> None:
    token = sign("backup.create", {"label": "x"})
    assert reason(token + "A" * MAX_TOKEN_BYTES) == "malformed"
    padded = raw_token(claims(iss="x" * MAX_TOKEN_BYTES))
    assert reason(padded) == "malformed"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "a.b",
        "a.b.c.d",
        "ünïcode.x.y",
        "!!!.@@@.###",
        b"\xff\xfe.\x00.\x01",
        b64(b"[1,2]") + "." + b64(b"{}") + ".",
        b64(b'{"alg":"EdDSA"}') + "." + b64(b"{}") + "." + b64(b"x" * 64),
        b64(b'{"alg":"EdDSA","kid":"admin-bob","kid":"x"}') + "." + b64(b"{}") + ".",
        b64(b'{"alg":"EdDSA","kid":"admin-bob","crit":["b64"],"b64":false}') + "..",
    ],
    ids=repr,
)
def test_garbage_is_malformed(garbage: str | bytes) -> None:
    assert reason(garbage) == "malformed"


def test_signed_claims_that_are_not_a_json_object_are_malformed() -> None:
    header = b64(json.dumps({"alg": "EdDSA", "kid": "admin-bob", "typ": "JWT"}).encode())
    key = load_private_key(PRIVATE)
    bodies = (b"not json", b"[1]", b'{"exp": NaN}', b'{"act": "db.report", "act": "db.vacuum"}')
    for body in bodies:
        payload = b64(body)
        signature = b64(key.sign(f"{header}.{payload}".encode()))
        assert reason(f"{header}.{payload}.{signature}") == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=512), st.text(max_size=512)))
def test_random_input_only_ever_raises_command_rejected(data: bytes | str) -> None:
    with pytest.raises(CommandRejected):
        verify(data)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    ),
    st.binary(max_size=64),
    st.binary(max_size=64),
)
def test_random_segments_only_ever_raise_command_rejected(
    header: dict[str, Any], body: bytes, signature: bytes
) -> None:
    token = f"{b64(json.dumps(header).encode())}.{b64(body)}.{b64(signature)}"
    with pytest.raises(CommandRejected):
        verify(token)


def test_a_bad_private_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        sign_command("db.report", {}, private_key_pem=b"nope", kid="k", issuer="i")
    with pytest.raises(ConfigError):
        sign_command("db.report", {}, private_key_pem=PUBLIC, kid="k", issuer="i")


def test_every_reason_is_documented() -> None:
    assert set(REJECTION_REASONS) == {
        "malformed",
        "bad_signature",
        "unknown_kid",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "lifetime_too_long",
        "action_not_allowed",
        "subject_mismatch",
        "unknown_action",
        "bad_params",
        "target_required",
        "replayed",
    }
