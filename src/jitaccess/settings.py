"""Every setting the service reads, from the environment (and ``.env``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///./jitaccess.db",
        validation_alias="JITACCESS_DATABASE_URL",
        description="SQLAlchemy URL; SQLite (one process) or postgresql:// (teams, replicas)",
    )
    sweep_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="JITACCESS_SWEEP_INTERVAL_SECONDS",
        description="How often the deadline sweep runs even when no deadline is known",
    )
    sweep_batch_size: int = Field(
        default=500,
        gt=0,
        validation_alias="JITACCESS_SWEEP_BATCH_SIZE",
        description="Requests handled per sweep transaction",
    )
    relay_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        validation_alias="JITACCESS_RELAY_INTERVAL_SECONDS",
        description="How often the outbox relay delivers queued notifications",
    )
    retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="JITACCESS_RETRY_BASE_SECONDS",
        description="First backoff delay after a failed grant or revoke",
    )
    retry_cap_seconds: float = Field(
        default=300.0,
        gt=0,
        validation_alias="JITACCESS_RETRY_CAP_SECONDS",
        description="Longest backoff delay between provider retries",
    )
    grant_max_attempts: int = Field(
        default=5,
        ge=1,
        validation_alias="JITACCESS_GRANT_MAX_ATTEMPTS",
        description="Failed grant attempts before a request becomes failed",
    )
    log_level: str = Field(
        default="INFO", validation_alias="JITACCESS_LOG_LEVEL", description="Python log level"
    )
    log_format: str = Field(
        default="text",
        pattern="^(text|json)$",
        validation_alias="JITACCESS_LOG_FORMAT",
        description="text for people, json for log pipelines",
    )
