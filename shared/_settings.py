"""Configuration from the environment (DESIGN.md, "Environment"), one pydantic-settings model.

Services extend ``Settings`` with their own fields; every field is documented in README's env
table. Secrets are ``SecretStr`` so they never reach a log line or a repr.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ACTIVE_TIMERS_SQL = (
    "SELECT tenant_id, count(*) FROM time_entries WHERE ended_at IS NULL GROUP BY tenant_id"
)


def default_instance() -> str:
    """A stable-enough instance id: the pod/host name plus pid, as a subject token."""
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in raw)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # Broker
    nats_url: str = Field(default="nats://127.0.0.1:4222", alias="NATS_URL")
    nats_connect_timeout_s: float = Field(default=2.0, alias="OPS_NATS_CONNECT_TIMEOUT")
    # nats-py gives up after 60 attempts (~2 min) by default; a service must outlive an outage.
    nats_max_reconnect_attempts: int = Field(default=-1, alias="OPS_NATS_MAX_RECONNECT")
    nats_reconnect_wait_s: float = Field(default=1.0, alias="OPS_NATS_RECONNECT_WAIT")
    # JetStream replicas for streams and buckets: 1 on one server, 3 on a production cluster.
    js_replicas: int = Field(default=1, alias="OPS_JS_REPLICAS")

    # Databases and storage
    database_url: SecretStr | None = Field(default=None, alias="DATABASE_URL")
    s3_endpoint_url: str | None = Field(default=None, alias="S3_ENDPOINT_URL")
    s3_bucket: str = Field(default="opsplane-backups", alias="S3_BUCKET")
    aws_region: str = Field(default="us-east-1", alias="AWS_REGION")

    # Integrations
    mailgun_api_base: str | None = Field(default=None, alias="MAILGUN_API_BASE")
    mailgun_api_key: SecretStr | None = Field(default=None, alias="MAILGUN_API_KEY")
    mailgun_domain: str | None = Field(default=None, alias="MAILGUN_DOMAIN")
    ws_url: str | None = Field(default=None, alias="WS_URL")
    alertmanager_url: str | None = Field(default=None, alias="ALERTMANAGER_URL")

    # Gateway
    gateway_host: str = Field(default="127.0.0.1", alias="OPS_GATEWAY_HOST")
    gateway_port: int = Field(default=8080, alias="OPS_GATEWAY_PORT")

    # Identity and trust
    deployment: str = Field(default="opsplane", alias="OPS_DEPLOYMENT")
    keyring_path: Path | None = Field(default=None, alias="OPS_KEYRING")
    auth_path: Path | None = Field(default=None, alias="OPS_AUTH")

    # Metrics, alerts, schedules
    active_timers_sql: str = Field(default=DEFAULT_ACTIVE_TIMERS_SQL, alias="OPS_ACTIVE_TIMERS_SQL")
    alert_rules_path: Path | None = Field(default=None, alias="OPS_ALERT_RULES")
    schedule_path: Path | None = Field(default=None, alias="OPS_SCHEDULE")

    # Seed guards (maintenance worker)
    backfill_tenant_ids_allowed: bool = Field(default=False, alias="BACKFILL_TENANT_IDS_ALLOWED")
    purge_app_data_allowed: bool = Field(default=False, alias="PURGE_APP_DATA_ALLOWED")
    backup_restore_allowed: bool = Field(default=False, alias="BACKUP_RESTORE_ALLOWED")

    # This process
    instance: str = Field(default_factory=default_instance, alias="OPS_INSTANCE")
    # Port of a non-HTTP service's own /livez, /readyz, /metrics (0 = the service's default).
    service_port: int = Field(default=0, alias="OPS_SERVICE_PORT")
    service_host: str = Field(default="127.0.0.1", alias="OPS_SERVICE_HOST")
    heartbeat_interval_s: float = Field(default=5.0, alias="OPS_HEARTBEAT_INTERVAL")
    log_level: str = Field(default="INFO", alias="OPS_LOG_LEVEL")
    log_format: str = Field(default="json", alias="OPS_LOG_FORMAT")

    @field_validator("nats_url")
    @classmethod
    def _strip_servers(cls, value: str) -> str:
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    def database_dsn(self) -> str:
        """The DSN, for a driver call only; never log it (it carries the password)."""
        if self.database_url is None:
            from ._errors import ConfigError

            raise ConfigError("DATABASE_URL is not set")
        return self.database_url.get_secret_value()
