"""The actions' params: what a signer may put in a command and what the worker will refuse."""

from __future__ import annotations

from typing import Any

import pytest

from shared import (
    ACTIONS,
    DESTRUCTIVE_ACTIONS,
    BackfillTenantIds,
    BackupRestore,
    CommandRejected,
    DbVacuum,
    PurgeAppData,
    parse_params,
)

JOB = "3f2b8c1e-9d4a-4e4b-8f3a-0c5d2e1b7a69"


def rejected(action: str, params: Any) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        parse_params(action, params)
    return info.value


def test_every_action_of_the_contract_is_declared() -> None:
    assert set(ACTIONS) == {
        "backup.create",
        "backup.verify",
        "backup.prune",
        "backup.restore",
        "backfill.tenant_ids",
        "purge.app_data",
        "db.vacuum",
        "db.report",
        "job.cancel",
    }
    assert {"purge.app_data", "backup.restore"} == DESTRUCTIVE_ACTIONS


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("backup.create", {}),
        ("backup.create", {"label": "before-migration.v2"}),
        ("backup.verify", {"mode": "quick"}),
        ("backup.verify", {"mode": "restore", "key": "opsplane/2024/01/02/abc.dump"}),
        ("backup.prune", {"dry_run": True}),
        ("backup.restore", {"key": "p/x.dump", "database": "restore_1", "confirm": "restore_1"}),
        ("backfill.tenant_ids", {}),
        ("backfill.tenant_ids", {"dry_run": True, "batch_size": 100_000}),
        ("purge.app_data", {"scope": "all", "confirm": "CONFIRM"}),
        ("purge.app_data", {"scope": "tenant", "tenant_id": "acme", "confirm": "acme"}),
        ("db.vacuum", {}),
        ("db.vacuum", {"tables": ["time_entries", "public.users"]}),
        ("db.report", {}),
        ("job.cancel", {"job_id": JOB}),
    ],
)
def test_valid_params_are_accepted(action: str, params: dict[str, Any]) -> None:
    model = parse_params(action, params)
    assert isinstance(model, ACTIONS[action])
    assert model.model_dump(exclude_unset=True) == params


def test_defaults() -> None:
    backfill = parse_params("backfill.tenant_ids", {})
    assert isinstance(backfill, BackfillTenantIds)
    assert (backfill.dry_run, backfill.batch_size) == (False, 1000)
    purge = parse_params("purge.app_data", {"scope": "all", "confirm": "CONFIRM"})
    assert isinstance(purge, PurgeAppData) and purge.dry_run is False
    vacuum = parse_params("db.vacuum", {})
    assert isinstance(vacuum, DbVacuum) and vacuum.tables is None


def test_unknown_action_names_the_known_ones() -> None:
    error = rejected("backup.delete_everything", {})
    assert error.reason == "unknown_action"
    assert "backup.create" in str(error)


@pytest.mark.parametrize(
    ("action", "params", "says"),
    [
        ("db.report", {"verbose": True}, "verbose: unknown parameter"),
        ("backup.create", {"label": "a label"}, "label: must be"),
        ("backup.create", {"label": "x" * 65}, "label: must be"),
        ("backup.verify", {}, "mode: required"),
        ("backup.verify", {"mode": "full"}, "mode:"),
        ("backup.verify", {"mode": "quick", "key": "../etc/passwd"}, "key:"),
        ("backup.verify", {"mode": "quick", "key": "a/../../b.dump"}, "'..'"),
        ("backup.verify", {"mode": "quick", "key": "/abs.dump"}, "key:"),
        ("backup.verify", {"mode": "quick", "key": "with space.dump"}, "key:"),
        ("backup.prune", {"dry_run": "true"}, "dry_run:"),
        ("backup.prune", {"dry_run": 1}, "dry_run:"),
        ("backfill.tenant_ids", {"batch_size": 0}, "batch_size:"),
        ("backfill.tenant_ids", {"batch_size": 100_001}, "batch_size:"),
        ("backfill.tenant_ids", {"batch_size": "10"}, "batch_size:"),
        ("db.vacuum", {"tables": []}, "tables:"),
        ("db.vacuum", {"tables": ["users; DROP TABLE users"]}, "tables.0:"),
        ("db.vacuum", {"tables": ["a.b.c"]}, "tables.0:"),
        ("job.cancel", {"job_id": "not-a-uuid"}, "job_id: must be a lowercase UUID"),
        ("job.cancel", {"job_id": JOB.upper()}, "job_id:"),
        ("job.cancel", {}, "job_id: required"),
    ],
)
def test_bad_params_are_one_readable_line(action: str, params: Any, says: str) -> None:
    error = rejected(action, params)
    assert error.reason == "bad_params"
    message = str(error)
    assert message.startswith(f"{action}: ")
    assert says in message
    assert "\n" not in message and "https://" not in message


def test_params_must_be_an_object() -> None:
    assert rejected("db.report", ["x"]).reason == "bad_params"
    assert rejected("db.report", None).reason == "bad_params"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"scope": "all", "confirm": "yes"}, "confirm = 'CONFIRM'"),
        ({"scope": "all", "confirm": "confirm"}, "confirm = 'CONFIRM'"),
        ({"scope": "all", "tenant_id": "acme", "confirm": "CONFIRM"}, "takes no tenant_id"),
        ({"scope": "tenant", "confirm": "acme"}, "needs tenant_id"),
        ({"scope": "tenant", "tenant_id": "acme", "confirm": "CONFIRM"}, "confirm = the tenant"),
        ({"scope": "tenant", "tenant_id": "acme", "confirm": "globex"}, "confirm = the tenant"),
        ({"scope": "tenant", "tenant_id": "a b", "confirm": "a b"}, "tenant_id:"),
        ({"scope": "everything", "confirm": "CONFIRM"}, "scope:"),
        ({"scope": "all"}, "confirm: required"),
    ],
)
def test_purge_confirm_rules(params: dict[str, Any], says: str) -> None:
    error = rejected("purge.app_data", params)
    assert error.reason == "bad_params"
    assert says in str(error)


def test_restore_confirm_must_repeat_the_database() -> None:
    error = rejected("backup.restore", {"key": "k.dump", "database": "prod", "confirm": "yes"})
    assert "confirm must repeat the target database" in str(error)
    bad_name = rejected(
        "backup.restore", {"key": "k.dump", "database": 'x"; DROP', "confirm": 'x"; DROP'}
    )
    assert "database:" in str(bad_name)
    ok = parse_params("backup.restore", {"key": "k.dump", "database": "prod", "confirm": "prod"})
    assert isinstance(ok, BackupRestore) and ok.database == "prod"


def test_params_are_immutable() -> None:
    model = parse_params("backfill.tenant_ids", {"batch_size": 5})
    with pytest.raises(ValueError):
        model.batch_size = 6  # type: ignore[attr-defined]
