"""The api's NATS edge: manual checks over `watch.probe.run` and JetStream consumer lag.

Errors: `ProbeUnavailable` (NATS down, no prober listening, or no answer in time) and
`ProbeRejected` (the prober answered with an error, e.g. an unknown service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from pydantic import ValidationError

from services.api.schemas import ConsumerLag
from shared.events import CHECKS_STREAM, PROBE_RUN_SUBJECT, ProbeRunReply, ProbeRunRequest
from shared.logs import get_log

log = get_log(__name__)

LAG_TIMEOUT = 2.0


class ProbeUnavailable(RuntimeError):
    """No prober could run the checks."""


class ProbeRejected(RuntimeError):
    """The prober refused the request."""


class Bus:
    """A NATS connection that is (re)established in the background, never blocking start."""

    def __init__(self, *, url: str | None = None, client: NatsClient | None = None) -> None:
        self._url = url
        self._client = client
        self._owned = client is None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin connecting (owned connection only); returns at once."""
        if self._client is None and self._url and self._task is None:
            self._task = asyncio.create_task(self._connect(), name="api-nats-connect")

    async def _connect(self) -> None:
        quiet = False  # one error line per outage, not one per reconnect attempt

        async def on_error(exc: Exception) -> None:
            nonlocal quiet
            if not quiet:
                quiet = True
                log.warning("nats_error", error=type(exc).__name__)

        async def on_disconnect() -> None:
            log.warning("nats_disconnected")

        async def on_reconnect() -> None:
            nonlocal quiet
            quiet = False
            log.info("nats_reconnected")

        assert self._url is not None
        # max_reconnect_attempts=-1: the first connect also waits for NATS, however long.
        self._client = await nats.connect(
            servers=[u.strip() for u in self._url.split(",") if u.strip()],
            name="watch-api",
            connect_timeout=2,
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        quiet = False
        log.info("nats_connected")

    async def close(self) -> None:
        """Stop connecting and close the connection this object opened."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._owned and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    @property
    def connected(self) -> bool:
        """True while the connection to NATS is up."""
        return self._client is not None and self._client.is_connected

    async def run_probe(self, service_id: str | None, *, wait_seconds: float) -> ProbeRunReply:
        """Ask a prober to check one service (or all) now and wait for the results."""
        if self._client is None or not self._client.is_connected:
            raise ProbeUnavailable("NATS is not connected, so no prober can be asked to run checks")
        request = ProbeRunRequest(service_id=service_id).to_wire()
        try:
            msg = await self._client.request(PROBE_RUN_SUBJECT, request, timeout=wait_seconds)
        except NoRespondersError as exc:
            raise ProbeUnavailable(
                f"no prober is listening on {PROBE_RUN_SUBJECT}; is the prober running?"
            ) from exc
        except TimeoutError as exc:
            raise ProbeUnavailable(f"no prober answered within {wait_seconds:g} s") from exc
        try:
            data = json.loads(msg.data)
            # DESIGN.md's first draft replied with a bare list; accept it as well.
            reply = ProbeRunReply(results=data) if isinstance(data, list) else ProbeRunReply(**data)
        except (ValueError, TypeError, ValidationError) as exc:
            raise ProbeUnavailable("the prober's reply could not be read") from exc
        if reply.error and not reply.results:
            raise ProbeRejected(reply.error)
        return reply

    async def consumer_lag(self, durable: str) -> ConsumerLag | None:
        """Backlog of a durable consumer on WATCH_CHECKS; None when unknown."""
        if self._client is None or not self._client.is_connected:
            return None
        try:
            info = await self._client.jetstream().consumer_info(
                CHECKS_STREAM, durable, timeout=LAG_TIMEOUT
            )
        except (TimeoutError, nats.errors.Error):  # includes the consumer not existing
            return None
        return ConsumerLag(pending=info.num_pending or 0, ack_pending=info.num_ack_pending or 0)
