"""Error bodies: 422 names the parameter and what is allowed, 404/401/503 say what happened.

Errors raised by handlers:
    ApiError (status, code, message)   any deliberate non-2xx answer
    ParamInvalid (param, message, got) -> 422 invalid_parameter (checks FastAPI cannot express)
    DatabaseUnavailable                -> 503 database_unavailable (no earlier answer to replay)
    ProbeUnavailable                   -> 503 prober_unavailable
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.bus import ProbeUnavailable
from services.api.schemas import ErrorBody, ParamError, ValidationErrorBody
from services.api.store import DatabaseUnavailable
from shared.logs import get_log

log = get_log(__name__)

MAX_DAYS = 3650
MAX_HOURS = 24 * 366
FIRST_MONTH = "2000-01"
SERVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
PARAM_RULES = {
    "days": f"days must be an integer from 1 to {MAX_DAYS}",
    "hours": f"hours must be an integer from 1 to {MAX_HOURS}",
    "month": f"month must be a calendar month YYYY-MM from {FIRST_MONTH} to the current month",
    "resolution": "resolution must be 1h or 1d",
    "serviceId": "serviceId must be a catalog slug: 1 to 64 characters a-z, 0-9 and '-', "
    "starting with a letter or digit",
}
RETRY_AFTER_SECONDS = "5"


class ApiError(Exception):
    """A deliberate error answer."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class ParamInvalid(Exception):
    """A parameter that passed type checks but breaks a rule (range of months, exclusivity)."""

    def __init__(self, param: str, message: str, got: str | None) -> None:
        super().__init__(message)
        self.param, self.message, self.got = param, message, got


def not_found(service_id: str) -> ApiError:
    """404 for a service the catalog does not know."""
    return ApiError(404, "not_found", f"unknown service '{service_id}'")


def _body(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorBody(error=code, message=message).model_dump(by_alias=True), status, headers=headers
    )


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _body(exc.status, exc.code, exc.message, exc.headers)


async def _on_param_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ParamInvalid)
    body = ValidationErrorBody(
        detail=[ParamError(param=exc.param, message=exc.message, got=exc.got)]
    )
    return JSONResponse(body.model_dump(by_alias=True), 422)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        param = str(loc[-1]) if loc else "request"
        # The raw text the client sent, not pydantic's partially parsed value.
        source = loc[0] if loc else None
        got = request.query_params.get(param) if source == "query" else None
        if source == "path":
            got = request.path_params.get(param)
        if got is None and err.get("input") is not None and not isinstance(err["input"], dict):
            got = str(err["input"])
        detail.append(ParamError(param=param, message=PARAM_RULES.get(param, err["msg"]), got=got))
    body = ValidationErrorBody(detail=detail)
    return JSONResponse(body.model_dump(by_alias=True), 422)


async def _on_database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _body(
        503,
        "database_unavailable",
        f"{exc}; there is no earlier answer to this request to serve instead, retry later",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _on_probe_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _body(503, "prober_unavailable", str(exc), {"Retry-After": RETRY_AFTER_SECONDS})


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return _body(404, "not_found", f"no such path: {request.url.path}", exc.headers)
    if exc.status_code == 405:
        return _body(
            405, "method_not_allowed", f"{request.method} is not allowed here", exc.headers
        )
    return _body(exc.status_code, "http_error", str(exc.detail), exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled", exc=True, path=request.url.path, error=type(exc).__name__)
    return _body(500, "internal_error", "unexpected error; see the api's log")


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error bodies on an app."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ParamInvalid, _on_param_invalid)
    app.add_exception_handler(DatabaseUnavailable, _on_database_unavailable)
    app.add_exception_handler(ProbeUnavailable, _on_probe_unavailable)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
