"""The keyring file: patterns, formats, and a clear error for every bad file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared import ConfigError, Keyring, keyring_entry_toml, new_keypair

_, PUBLIC = new_keypair()
PEM = PUBLIC.decode()


def toml_file(tmp_path: Path, text: str, name: str = "keyring.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def entry(kid: str = "ops-alice", actions: str = '["backup.*"]', pem: str = PEM) -> str:
    return f"[keys.{kid}]\npublic_key = {json.dumps(pem)}\nactions = {actions}\n"


def error(tmp_path: Path, text: str, name: str = "keyring.toml") -> str:
    path = toml_file(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        Keyring.load(path)
    message = str(info.value)
    assert str(path) in message  # always names the file
    return message


def test_toml_keyring_and_patterns(tmp_path: Path) -> None:
    text = entry("ops-alice", '["backup.*", "db.report"]') + entry("admin-bob", '["*"]')
    ring = Keyring.load(toml_file(tmp_path, text))
    assert ring.kids == ["admin-bob", "ops-alice"] and len(ring) == 2
    alice = ring.get("ops-alice")
    assert alice is not None
    assert alice.allows("backup.create") and alice.allows("backup.restore")
    assert alice.allows("db.report") and not alice.allows("db.vacuum")
    assert not alice.allows("backupx.create") and not alice.allows("purge.app_data")
    bob = ring.get("admin-bob")
    assert bob is not None and bob.allows("purge.app_data") and bob.allows("anything.at_all")
    assert ring.get("mallory") is None and "mallory" not in ring


def test_json_keyring(tmp_path: Path) -> None:
    doc = {"keys": {"ops-alice": {"public_key": PEM, "actions": ["db.*"]}}}
    ring = Keyring.load(toml_file(tmp_path, json.dumps(doc), "keyring.json"))
    assert ring.kids == ["ops-alice"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Keyring.load(tmp_path / "missing.toml")


def test_bad_toml_and_bad_json(tmp_path: Path) -> None:
    assert "not valid TOML" in error(tmp_path, "[keys.ops-alice\n")
    assert "not valid JSON" in error(tmp_path, "{", "k.json")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no keys"),
        ("[keys]\n", "no keys"),
        ("version = 2\n" + entry(), "unknown top-level"),
        (entry().replace("actions", "action"), "unknown field(s) ['action']"),
        (entry(actions="[]"), "actions must be a non-empty list"),
        (entry(actions='"backup.*"'), "actions must be a non-empty list"),
        (entry(actions='["backup"]'), "bad action pattern 'backup'"),
        (entry(actions='["backup.**"]'), "bad action pattern"),
        (entry(actions='["backups.*"]'), "matches no action"),
        (entry(pem="not a pem"), "not a PEM public key"),
        ("[keys.ops-alice]\nactions = ['*']\n", "public_key is required"),
        ('[keys."bad kid!"]\npublic_key = "x"\nactions = ["*"]\n', "a kid is"),
    ],
)
def test_bad_entries_name_the_file_and_the_kid(tmp_path: Path, text: str, says: str) -> None:
    message = error(tmp_path, text)
    assert says in message
    if text.startswith("[keys.") and text.strip() != "[keys]":
        assert "key " in message


def test_a_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    message = error(tmp_path, entry(pem=ec_pem))
    assert "'ops-alice'" in message and "must be Ed25519" in message


def test_new_keypair_and_the_block_to_paste_round_trip() -> None:
    private, public = new_keypair()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    block = keyring_entry_toml("ops-alice", public, ["backup.*"])
    ring = Keyring.from_mapping(tomllib.loads(block))
    alice = ring.get("ops-alice")
    assert alice is not None and alice.allows("backup.create")
    dotted = Keyring.from_mapping(tomllib.loads(keyring_entry_toml("ops.alice", public, ["*"])))
    assert dotted.kids == ["ops.alice"]
