"""The one exception tree of opsplane.

Errors of the libraries underneath (nats, asyncpg, botocore) are mapped to these at the
boundary, so callers catch ``OpsplaneError`` subclasses and never a driver's exception.

    OpsplaneError
    ├── CommandRejected        a signed maintenance command refused (``.reason``)
    ├── ConfigError            bad settings or configuration file
    ├── ContractError          a message that breaks the wire contract (goes to the DLQ)
    ├── DependencyError        a dependency failed or timed out
    │   ├── BrokerError        NATS / JetStream
    │   ├── DatabaseError      PostgreSQL
    │   └── StorageError       S3
    ├── DriftError             declared JetStream config differs from the server's
    └── MigrationError         a schema migration failed or was tampered with
"""

from __future__ import annotations


class OpsplaneError(Exception):
    """Base of every error opsplane raises on purpose."""


class ConfigError(OpsplaneError):
    """Settings or a configuration file are invalid."""


class ContractError(OpsplaneError):
    """A message does not satisfy the wire contract."""

    def __init__(self, reason: str, *, origin: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.origin = origin


class DependencyError(OpsplaneError):
    """A dependency (broker, database, object store) failed or timed out."""


class BrokerError(DependencyError):
    """NATS or JetStream failed."""


class DatabaseError(DependencyError):
    """PostgreSQL failed."""


class StorageError(DependencyError):
    """S3 failed."""


class DriftError(OpsplaneError):
    """A stream, consumer or bucket on the server differs from its declaration."""


class MigrationError(OpsplaneError):
    """A migration failed, or an applied one no longer matches its file."""


class CommandRejected(OpsplaneError):
    """A signed maintenance command was refused; it is audited and never run.

    ``reason`` is a short stable code (``REJECTION_REASONS`` in ``shared._commands``: it goes on
    the wire in the ``rejected`` job event); ``str()`` is the human explanation.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason
