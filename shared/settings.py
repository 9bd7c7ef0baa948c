"""Typed settings shared by every service, read from the environment and validated at start."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """The environment every service reads (names as in DESIGN.md, upper-case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/watch",
        description="PostgreSQL DSN (asyncpg form).",
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated."
    )
    log_level: LogLevel = "info"
    sla_target: float = Field(
        default=99.9, gt=0, le=100, description="Default SLA target in percent."
    )
    request_timeout: int = Field(
        default=10000, gt=0, le=600_000, description="HTTP check timeout, ms."
    )
    services_file: str = "services.yaml"
    api_port: int = Field(default=3008, ge=0, le=65535, description="0 = any free port (tests).")
    api_host: str = "0.0.0.0"
    api_token: str | None = Field(default=None, description="Bearer token for write endpoints.")
    region: str = Field(default="local", min_length=1, max_length=64)
    prober_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    retention_days: int = Field(default=30, ge=1, le=3650, description="Raw results kept, days.")
    checks_max_age_days: float = Field(
        default=7, gt=0, description="WATCH_CHECKS stream max_age, days."
    )
    major_outage_below: float = Field(
        default=95.0, ge=0, le=100, description="Day uptime under this is 'mo'."
    )
    sla_window_days: int = Field(
        default=30, ge=1, le=366, description="Rolling window for SLA events."
    )
    ops_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Health/metrics port; unset = service default, 0 = any free port (tests).",
    )
    ops_host: str = "0.0.0.0"
    prober_buffer_size: int = Field(
        default=100_000, ge=1, description="Results kept while NATS is down."
    )
    prober_concurrency: int = Field(default=500, ge=1, description="Checks in flight at once.")
    recorder_batch_size: int = Field(default=1000, ge=1, le=100_000)
    aggregator_batch_size: int = Field(default=1000, ge=1, le=100_000)
    status_quorum: bool = Field(
        default=True,
        description=(
            "Aggregator: a service is down only when at least half the regions probing it "
            "see it down (their latest checks within two intervals); false = every check "
            "moves the status."
        ),
    )
    stale_cache_seconds: int = Field(
        default=86_400, ge=0, description="How old a stale answer may be."
    )

    @model_validator(mode="after")
    def _raw_outlives_stream(self) -> Settings:
        # The aggregator's record of counted checks lives as long as raw data; a replay of
        # the stream must never reach checks whose record was already dropped.
        if self.retention_days < self.checks_max_age_days:
            raise ValueError(
                f"RETENTION_DAYS ({self.retention_days}) must be at least "
                f"CHECKS_MAX_AGE_DAYS ({self.checks_max_age_days})"
            )
        return self

    @field_validator("api_token")
    @classmethod
    def _empty_token_is_none(cls, value: str | None) -> str | None:
        return value or None


def load_settings(service: str, **overrides: object) -> Settings:
    """Read settings from the environment; exit with a message naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"{service}: invalid configuration:"]
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}={err.get('input')!r}: {err['msg']}")
        raise SystemExit("\n".join(lines)) from None
