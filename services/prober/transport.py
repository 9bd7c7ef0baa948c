"""An httpx transport over an aiohttp session, lean enough for thousands of checks a second.

httpx's API stays (the prober takes an `httpx.AsyncClient`; tests pass a MockTransport); the
wire work is aiohttp's. Compared with `httpx_aiohttp.AiohttpTransport` this one reads the
whole body inside the call (so the connection goes back to the pool at once and httpx reads
from memory), keeps the parsed URL and the aiohttp timeout per distinct value instead of
rebuilding them per request, and maps exceptions without a generator context manager.
Together that halved the CPU the HTTP layer costs per check (bench/bench_prober.py).

Errors keep httpx's hierarchy, raised `from` aiohttp's original exception, so the prober's
classification (services.prober.probe.classify) can still look at the cause:

    aiohttp.ServerTimeoutError            -> httpx.TimeoutException
    aiohttp.SocketTimeoutError            -> httpx.ReadTimeout
    aiohttp.ClientConnectorError          -> httpx.ConnectError
    aiohttp.ClientConnectionError (other) -> httpx.ConnectError
    aiohttp.ClientPayloadError            -> httpx.ReadError
    aiohttp.InvalidUrlClientError,
    aiohttp.NonHttpUrlClientError         -> httpx.UnsupportedProtocol
    any other aiohttp.ClientError         -> httpx.TransportError
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

from services.prober import timing

# Most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (aiohttp.InvalidUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.ConnectError),
    (aiohttp.ClientError, httpx.TransportError),
)
_HTTP11 = b"HTTP/1.1"
BODY_IN_MEMORY = "watch_body_in_memory"
"""Response extension: true when the body was read with the response (no I/O left)."""
# Parsed URLs and header sets are kept per distinct value; past this many (more endpoints
# than a catalog has in practice) a cache simply starts over.
_CACHE_SIZE = 200_000


def map_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for an aiohttp one (raise it `from exc`)."""
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc))
    return httpx.TransportError(str(exc))


class LazyHeadersResponse(httpx.Response):
    """An httpx.Response whose headers become `httpx.Headers` when first read.

    Normalizing every header of every response was ~5 % of a check's CPU, and most checks
    never look at a header (only header conditions and body decoding do).
    """

    def __init__(
        self, status_code: int, *, raw_headers: Sequence[tuple[bytes, bytes]], **kwargs: Any
    ) -> None:
        super().__init__(status_code, **kwargs)
        self._raw_headers: Sequence[tuple[bytes, bytes]] | None = raw_headers

    @property  # type: ignore[override]
    def headers(self) -> httpx.Headers:
        if self._raw_headers is not None:
            self._headers = httpx.Headers(list(self._raw_headers))
            self._raw_headers = None
        return self._headers

    @headers.setter
    def headers(self, value: httpx.Headers) -> None:
        self._headers = value
        self._raw_headers = None


class _NoCookies(httpx.Cookies):
    """A cookie store that ignores Set-Cookie without even parsing the response for it."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """The prober's AsyncClient: never keeps a cookie, and can send without httpx's layers.

    No cookies: one check must not change what the next sees. A cookie policy that refuses
    every domain does the same, but httpx still parses each response for it (~10 % of a
    check's CPU); this client skips the parsing.

    `send_direct(request)` is `send(request, stream=True)` for a client that uses none of
    the layers httpx wraps around its transport (auth flow, redirects, event hooks, cookies,
    the elapsed timer): it hands the request to the transport at once. Those layers cost
    ~35 µs per request (bench: more than the transport itself adds to bare aiohttp); a
    client given auth, event hooks or follow_redirects takes the full `send` path instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the prober's client keeps no cookies")

    async def send_direct(self, request: httpx.Request) -> httpx.Response:
        """Send `request` as `send(request, stream=True)` would, skipping unused layers."""
        if self._auth is not None or self.follow_redirects or any(self._event_hooks.values()):
            return await self.send(request, stream=True)
        transport = self._transport_for_url(request.url) if self._mounts else self._transport
        return await transport.handle_async_request(request)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent by one aiohttp session, created on first use inside the loop."""

    def __init__(self, *, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._factory = session
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}
        self._headers: dict[tuple[tuple[bytes, bytes], ...], CIMultiDict[str]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, read the whole response, return it with the body in memory."""
        session = self._session
        if session is None:
            session = self._session = self._factory()
        extensions = request.extensions
        try:
            data: Any = request.content or None
        except httpx.RequestNotRead:  # a streaming body: aiohttp reads the async iterator
            data = request.stream
        options: dict[str, Any] = {}
        if (sni := extensions.get("sni_hostname")) is not None:
            options["server_hostname"] = sni
        try:
            async with session.request(
                request.method,
                self._url(request.url),
                headers=self._prepared_headers(request.headers),
                data=data,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as with its own transport
                timeout=self._timeout(extensions.get("timeout")),
                **options,
            ) as response:
                timing.response_started(response)
                body = await response.read()
        except aiohttp.ClientError as exc:
            raise map_error(exc) from exc
        reason = response.reason
        return LazyHeadersResponse(
            status_code=response.status,
            raw_headers=response.raw_headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=(
                {"http_version": _HTTP11, "reason_phrase": reason.encode(), BODY_IN_MEMORY: True}
                if reason
                else {"http_version": _HTTP11, BODY_IN_MEMORY: True}
            ),
        )

    async def aclose(self) -> None:
        """Close the aiohttp session (and its connections)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, url: httpx.URL) -> URL:
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            # httpx has already percent-encoded it: aiohttp must send it as it is.
            parsed = self._urls[text] = URL(text, encoded=True)
        return parsed

    def _prepared_headers(self, headers: httpx.Headers) -> CIMultiDict[str]:
        # aiohttp copies what it is given, so one multidict per distinct header set will do.
        key = tuple(headers.raw)
        prepared = self._headers.get(key)
        if prepared is None:
            if len(self._headers) >= _CACHE_SIZE:
                self._headers.clear()
            prepared = self._headers[key] = CIMultiDict(headers.multi_items())
        return prepared

    def _timeout(self, timeout: dict[str, float | None] | None) -> aiohttp.ClientTimeout:
        # httpx's per-phase timeouts, as httpx_aiohttp maps them (pool wait -> connect).
        timeout = timeout or {}
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        mapped = self._timeouts.get(key)
        if mapped is None:
            mapped = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return mapped
