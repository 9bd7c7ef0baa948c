"""The service catalog: the YAML file of monitored services, validated into typed objects.

A bad catalog raises `CatalogError`, whose message names the file, the service and the field:
`services.yaml: service 'face-compare' (services[2]): endpoints[0].url: ...`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from services.prober.conditions import Condition, ConditionError, parse_condition
from shared.events import EndpointDefinition, ServiceDefined
from shared.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REDACTED = "***"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# `${NAME}`, `${NAME:-default}`; `$${NAME}` is a literal `${NAME}`.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STATUS_RANGE = re.compile(r"^(\d{3})\s*-\s*(\d{3})$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)


class CatalogError(Exception):
    """The catalog file is missing, unreadable or invalid; the message says where and why."""


def parse_duration(value: Any) -> float:
    """Seconds from `"500ms"`, `"30s"`, `"5m"`, `"1h"` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '500ms', '5m' or a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            f"{value!r} is not a duration: use '30s', '500ms', '5m', '1h' or a number of seconds"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


def normalize_status(value: Any) -> str:
    """`200` → "200", `"2xx"` → "200-299", `"200-299"` stays; anything else is an error."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a status code")
    text = str(value).strip()
    if text.isdigit():
        low = high = int(text)
    elif m := _STATUS_RANGE.match(text):
        low, high = int(m.group(1)), int(m.group(2))
    elif m := _STATUS_CLASS.match(text):
        low, high = int(m.group(1)) * 100, int(m.group(1)) * 100 + 99
    else:
        raise ValueError(f"{value!r} is not a status code, a range like '200-299' or a class '2xx'")
    if not (100 <= low <= high <= 599):
        raise ValueError(f"{value!r} is outside 100-599 or its range is reversed")
    return str(low) if low == high else f"{low}-{high}"


StatusSpec = Annotated[str, BeforeValidator(normalize_status)]


def status_matches(code: int, expected: tuple[str, ...] | list[str]) -> bool:
    """True when `code` is one of the normalized expected codes or ranges."""
    for item in expected:
        low, _, high = item.partition("-")
        if int(low) <= code <= int(high or low):
            return True
    return False


def redact_url(url: str) -> str:
    """The URL without userinfo, query values or fragment, fit for events and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{key}={REDACTED}" if value else key
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _condition(value: str) -> str:
    try:
        parse_condition(value)
    except ConditionError as exc:
        raise ValueError(str(exc)) from None
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


ConditionText = Annotated[str, AfterValidator(_condition)]
RegexText = Annotated[str, AfterValidator(_regex)]


class _Spec(BaseModel):
    """Catalog keys are camelCase; an unknown key is an error, so typos never pass silently."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class EndpointSpec(_Spec):
    """One endpoint as written in the catalog (after `${ENV}` substitution)."""

    name: str = Field(min_length=1, max_length=100)
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(default=None, alias="json")
    expected_status: list[StatusSpec] = Field(default_factory=lambda: ["200-299"], min_length=1)
    latency_threshold_ms: float | None = Field(default=None, gt=0)
    body_contains: str | None = Field(default=None, min_length=1)
    body_regex: RegexText | None = None
    conditions: list[ConditionText] = Field(default_factory=list)
    certificate_expires_in_days: float | None = Field(default=None, gt=0, le=3650)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value.strip():
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.strip()

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}")
        return value.upper()

    @field_validator("expected_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @model_validator(mode="after")
    def _one_body(self) -> EndpointSpec:
        if self.body is not None and self.json_body is not None:
            raise ValueError("set either body or json, not both")
        if self.certificate_expires_in_days is not None and not self.url.startswith("https://"):
            raise ValueError("certificateExpiresInDays needs an https:// url")
        return self


class ServiceSpec(_Spec):
    """One service as written in the catalog."""

    id: str = Field(max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str = ""
    interval: Duration = Field(default=30.0, ge=0.1, le=86_400)
    timeout: Duration | None = Field(default=None, gt=0, le=600)
    sla_target: float | None = Field(default=None, gt=0, le=100)
    endpoints: list[EndpointSpec] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("must be a slug: a-z, 0-9 and '-', starting with a letter or digit")
        return value

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, value: list[EndpointSpec]) -> list[EndpointSpec]:
        seen: set[str] = set()
        for endpoint in value:
            if endpoint.name in seen:
                raise ValueError(f"endpoint name {endpoint.name!r} is used twice")
            seen.add(endpoint.name)
        return value


@dataclass(frozen=True)
class Endpoint:
    """An endpoint ready to call. `url` and `headers` may hold secrets; `display_url` never."""

    name: str
    method: str
    url: str = field(repr=False)
    display_url: str
    headers: Mapping[str, str] = field(repr=False)
    body: str | None = field(repr=False)
    json_body: Any = field(repr=False)
    expected_status: tuple[str, ...]
    latency_threshold_ms: float | None
    body_contains: str | None = field(default=None, repr=False)
    body_regex: re.Pattern[str] | None = field(default=None, repr=False)
    conditions: tuple[Condition, ...] = field(default=(), repr=False)
    certificate_expires_in_days: float | None = None

    @property
    def reads_body(self) -> bool:
        """True when a condition looks at the body (so it must be decoded)."""
        return bool(self.body_contains or self.body_regex or self.conditions)


@dataclass(frozen=True)
class Service:
    """A monitored service with its schedule, defaults already applied."""

    id: str
    name: str
    description: str
    interval_seconds: float
    timeout_seconds: float
    sla_target: float
    endpoints: tuple[Endpoint, ...]
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    def definition(self, *, defined_at: datetime, active: bool = True) -> ServiceDefined:
        """The `ServiceDefined` event for this service (no headers, bodies or secrets)."""
        return ServiceDefined(
            service_id=self.id,
            name=self.name,
            description=self.description,
            active=active,
            interval_seconds=self.interval_seconds,
            timeout_ms=round(self.timeout_seconds * 1000),
            sla_target=self.sla_target,
            endpoints=[
                EndpointDefinition(
                    name=e.name,
                    method=e.method,
                    url=e.display_url,
                    expected_status=list(e.expected_status),
                    latency_threshold_ms=e.latency_threshold_ms,
                )
                for e in self.endpoints
            ],
            defined_at=defined_at,
        )

    def scrub(self, text: str) -> str:
        """`text` with every value that came from the environment replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class Catalog:
    """The services of one catalog file, in file order."""

    path: str
    services: tuple[Service, ...]

    def get(self, service_id: str) -> Service | None:
        """The service with this id, or None."""
        return next((s for s in self.services if s.id == service_id), None)


def load_catalog(
    path: str | Path, *, settings: Settings, env: Mapping[str, str] | None = None
) -> Catalog:
    """Read and validate the catalog; raise `CatalogError` naming file, service and field."""
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{label}: file not found (set SERVICES_FILE)") from None
    except OSError as exc:
        raise CatalogError(f"{label}: cannot read: {exc.strerror or exc}") from None
    return parse_catalog(text, label=label, settings=settings, env=env)


def parse_catalog(
    text: str, *, label: str, settings: Settings, env: Mapping[str, str] | None = None
) -> Catalog:
    """Validate catalog YAML text; `label` is the file name used in error messages."""
    env = os.environ if env is None else env
    try:
        # libyaml's loader when installed: a 50,000-service catalog loads in seconds, not minutes.
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{label}:{where}: invalid YAML: {problem}") from None
    if not isinstance(document, dict) or not isinstance(document.get("services", []), list):
        raise CatalogError(f"{label}: expected a mapping with a 'services' list at the top")
    unknown = sorted(str(k) for k in document if k != "services")
    if unknown:
        hint = _hint(unknown[0], ["services"])
        raise CatalogError(f"{label}: unknown top-level key {unknown[0]!r}{hint}")

    errors: list[str] = []
    services: list[Service] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(document.get("services") or []):
        where = _service_label(item, index)
        if not isinstance(item, dict):
            errors.append(f"{label}: {where}: expected a mapping of service fields")
            continue
        substituted, secrets, env_errors = _substitute(item, env)
        errors += [f"{label}: {where}: {e}" for e in env_errors]
        if env_errors:
            continue
        try:
            spec = ServiceSpec.model_validate(substituted)
        except ValidationError as exc:
            errors += [f"{label}: {where}: {_describe(e)}" for e in exc.errors()]
            continue
        if spec.id in first_index:
            errors.append(f"{label}: {where}: id: duplicate of services[{first_index[spec.id]}]")
            continue
        first_index[spec.id] = index
        services.append(_service(spec, item, secrets, settings))
    if errors:
        raise CatalogError("; ".join(errors))
    return Catalog(path=label, services=tuple(services))


def _service(
    spec: ServiceSpec, raw: dict[str, Any], secrets: set[str], settings: Settings
) -> Service:
    raw_endpoints = raw.get("endpoints") or []
    endpoints = tuple(
        Endpoint(
            name=e.name,
            method=e.method,
            url=e.url,
            # From the text as written: `${TOKEN}` shows as itself, never as its value.
            display_url=redact_url(str(raw_endpoints[i].get("url", ""))),
            headers=dict(e.headers),
            body=e.body,
            json_body=e.json_body,
            expected_status=tuple(e.expected_status),
            latency_threshold_ms=e.latency_threshold_ms,
            body_contains=e.body_contains,
            body_regex=re.compile(e.body_regex) if e.body_regex is not None else None,
            conditions=tuple(parse_condition(c) for c in e.conditions),
            certificate_expires_in_days=e.certificate_expires_in_days,
        )
        for i, e in enumerate(spec.endpoints)
    )
    return Service(
        id=spec.id,
        name=spec.name or spec.id,
        description=spec.description,
        interval_seconds=spec.interval,
        timeout_seconds=settings.request_timeout / 1000 if spec.timeout is None else spec.timeout,
        sla_target=spec.sla_target if spec.sla_target is not None else settings.sla_target,
        endpoints=endpoints,
        # Short values (a port, "1") would blank out unrelated text when scrubbed.
        secrets=frozenset(s for s in secrets | _userinfo(endpoints) if len(s) >= 4),
    )


def _userinfo(endpoints: tuple[Endpoint, ...]) -> set[str]:
    """Credentials written into URLs, so error messages can be scrubbed of them too."""
    found: set[str] = set()
    for endpoint in endpoints:
        netloc = urlsplit(endpoint.url).netloc
        if "@" in netloc:
            userinfo = netloc.rpartition("@")[0]
            found |= {userinfo, *userinfo.split(":", 1)}
    return found


def _service_label(item: Any, index: int) -> str:
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return f"service {item['id']!r} (services[{index}])"
    return f"services[{index}]"


def _substitute(item: Any, env: Mapping[str, str]) -> tuple[Any, set[str], list[str]]:
    """Replace `${NAME}` in every string value; report missing variables by field path."""
    secrets: set[str] = set()
    errors: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            return _ENV_REF.sub(lambda m: replace(m, path), value)
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def replace(match: re.Match[str], path: str) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in env:
            secrets.add(env[name])
            return env[name]
        if default is not None:
            return default
        errors.append(f"{path}: environment variable {name!r} is not set")
        return ""

    return walk(item, ""), secrets, errors


def _describe(error: Any) -> str:
    """`endpoints[0].url: must be ...` from one pydantic error."""
    loc = list(error["loc"])
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        fields = _aliases(EndpointSpec if "endpoints" in loc[:-1] else ServiceSpec)
        message = f"unknown field{_hint(str(loc[-1]), fields)}"
    elif error["type"] == "missing":
        message = "required field is missing"
    return f"{path or 'service'}: {message}"


def _aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
