"""The api's own settings (CORS, manual-check rate limit, read-only role, caches), read from
the environment beside the shared `Settings`, validated at start."""

from __future__ import annotations

import re

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ApiSettings(BaseSettings):
    """Environment variables only the api reads (names upper-case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    cors_origins: str = Field(
        default="",
        description="Origins allowed by CORS, comma-separated (e.g. https://dash.example.com); "
        "'*' allows any origin; empty (default) sends no CORS headers.",
    )
    api_db_readonly: bool = Field(
        default=True,
        description="SET ROLE to API_DB_ROLE on every connection, so the api cannot write.",
    )
    api_db_pool_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Database connections the api keeps; requests beyond it wait for one.",
    )
    api_db_role: str = Field(
        default="watch_api_ro", description="The read-only role created by migration 010."
    )
    health_check_ip_per_minute: float = Field(
        default=6, gt=0, le=60_000, description="Manual checks per client IP per minute."
    )
    health_check_ip_burst: int = Field(
        default=3, ge=1, le=10_000, description="Manual checks a client IP may make at once."
    )
    health_check_global_per_minute: float = Field(
        default=60, gt=0, le=600_000, description="Manual checks per minute, all clients."
    )
    health_check_global_burst: int = Field(
        default=10, ge=1, le=100_000, description="Manual checks at once, all clients."
    )
    metrics_cache_seconds: float = Field(
        default=15, ge=0, le=3600, description="How long /metrics reuses its per-service gauges."
    )
    badge_max_age_seconds: int = Field(
        default=60, ge=0, le=86_400, description="Cache-Control max-age of the SVG badges."
    )

    @field_validator("api_db_role")
    @classmethod
    def _plain_role_name(cls, value: str) -> str:
        if not _ROLE.match(value):
            raise ValueError("must be a plain lower-case PostgreSQL role name")
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS split on commas, blanks dropped."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


def load_api_settings(**overrides: object) -> ApiSettings:
    """Read the api's settings; exit with a message naming the bad variable."""
    try:
        return ApiSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = ["api: invalid configuration:"]
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}={err.get('input')!r}: {err['msg']}")
        raise SystemExit("\n".join(lines)) from None
