"""The maintenance actions and their ``params`` (DESIGN.md, "Signed commands": the table).

One pydantic model per action: unknown keys rejected, no type coercion (``"1"`` is not a
``bool`` here), and the confirm rules that need no environment as model validators. The guards
that do need the environment (``PURGE_APP_DATA_ALLOWED``, the target database, ...) are the
worker's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import CommandRejected

# An unquoted PostgreSQL identifier (63 bytes at most, NAMEDATALEN - 1).
_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
PG_IDENTIFIER = re.compile(rf"^{_IDENT}$")
_TABLE = re.compile(rf"^{_IDENT}(\.{_IDENT})?$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# S3's "safe" characters plus a few common in generated names (=, +, :, @).
_S3_KEY = re.compile(r"^[A-Za-z0-9!_.*'()=+:@/-]{1,1024}$")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


def _s3_key(value: str) -> str:
    if not _S3_KEY.match(value):
        raise ValueError("an S3 key is 1-1024 characters of letters, digits and !_.*'()=+:@/-")
    if ".." in value or value.startswith("/") or "//" in value:
        raise ValueError("an S3 key may not contain '..' or '//', nor start with '/'")
    return value


Label = Annotated[
    str,
    _matching(
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"),
        "1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)",
    ),
]
S3Key = Annotated[str, AfterValidator(_s3_key)]
Database = Annotated[
    str, _matching(PG_IDENTIFIER, "a PostgreSQL identifier (letters, digits, _ and $, <= 63)")
]
TableName = Annotated[
    str, _matching(_TABLE, "a table name, optionally schema-qualified (schema.table)")
]
TenantId = Annotated[
    str,
    _matching(re.compile(r"^[A-Za-z0-9_\-]{1,128}$"), "1-128 letters, digits, '_' or '-'"),
]
JobId = Annotated[
    str, _matching(_UUID, "a lowercase UUID like 3f2b8c1e-9d4a-4e4b-8f3a-0c5d2e1b7a69")
]
Confirm = Annotated[str, Field(max_length=128)]


class ActionParams(BaseModel):
    """Base of every action's params: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BackupCreate(ActionParams):
    label: Label | None = None


class BackupVerify(ActionParams):
    mode: Literal["quick", "restore"]
    key: S3Key | None = None  # default: the newest backup


class BackupPrune(ActionParams):
    dry_run: bool = False


class BackupRestore(ActionParams):
    key: S3Key
    database: Database
    confirm: Confirm

    @model_validator(mode="after")
    def _confirmed(self) -> BackupRestore:
        if self.confirm != self.database:
            raise ValueError("confirm must repeat the target database name exactly")
        return self


class BackfillTenantIds(ActionParams):
    dry_run: bool = False
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000


class PurgeAppData(ActionParams):
    scope: Literal["all", "tenant"]
    tenant_id: TenantId | None = None
    confirm: Confirm
    dry_run: bool = False

    @model_validator(mode="after")
    def _confirmed(self) -> PurgeAppData:
        if self.scope == "all":
            if self.tenant_id is not None:
                raise ValueError("scope 'all' takes no tenant_id (use scope 'tenant')")
            if self.confirm != "CONFIRM":
                raise ValueError("scope 'all' needs confirm = 'CONFIRM'")
        else:
            if self.tenant_id is None:
                raise ValueError("scope 'tenant' needs tenant_id")
            if self.confirm != self.tenant_id:
                raise ValueError("scope 'tenant' needs confirm = the tenant_id")
        return self


class DbVacuum(ActionParams):
    tables: Annotated[list[TableName], Field(min_length=1, max_length=200)] | None = None


class DbReport(ActionParams):
    pass


class JobCancel(ActionParams):
    job_id: JobId


ACTIONS: dict[str, type[ActionParams]] = {
    "backup.create": BackupCreate,
    "backup.verify": BackupVerify,
    "backup.prune": BackupPrune,
    "backup.restore": BackupRestore,
    "backfill.tenant_ids": BackfillTenantIds,
    "purge.app_data": PurgeAppData,
    "db.vacuum": DbVacuum,
    "db.report": DbReport,
    "job.cancel": JobCancel,
}

# These also carry the ``target`` claim and never run concurrently.
DESTRUCTIVE_ACTIONS: frozenset[str] = frozenset({"purge.app_data", "backup.restore"})


def _condense(exc: ValidationError) -> str:
    """Pydantic's errors as one readable line: ``batch_size: must be <= 100000; x: unknown``."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            message = "unknown parameter"
        elif error["type"] == "missing":
            message = "required"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_params(action: str, params: Any) -> ActionParams:
    """Validate ``params`` for ``action``; raise ``CommandRejected`` (``unknown_action`` or
    ``bad_params``) with one readable line otherwise."""
    model = ACTIONS.get(action) if isinstance(action, str) else None
    if model is None:
        known = ", ".join(sorted(ACTIONS))
        raise CommandRejected("unknown_action", f"unknown action {action!r} (known: {known})")
    if not isinstance(params, Mapping):
        raise CommandRejected("bad_params", f"{action}: params must be an object")
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise CommandRejected("bad_params", f"{action}: {_condense(exc)}") from None
