"""A lean JetStream pull loop for the checks consumer (the recorder's hot path).

nats-py's `fetch(n)` waits for each message with its own `wait_for` task, which caps a
process near 15-20k messages/s on these machines. Here one pull request
(`$JS.API.CONSUMER.MSG.NEXT`) asks for a whole batch on a private inbox, and the batch is
taken from the inbox queue in one go; acks stay per message (explicit), so replicas sharing
the durable consumer never ack one another's work. Several workers pull at once, so one
batch is decoded while another is being committed.

Errors: NATS trouble while pulling (disconnected, no responders, timeouts) is logged once
and retried after a pause; the handler settles every message itself (see batches.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from shared.logs import get_log

log = get_log(__name__)

Handler = Callable[[Sequence[Msg]], Awaitable[None]]
_STATUS = "Status"


async def ensure_consumer(
    js: JetStreamContext, *, stream: str, durable: str, subjects: str, config: ConsumerConfig
) -> None:
    """Create the durable consumer unless it exists (an existing one is used as it is)."""
    try:
        await js.consumer_info(stream, durable)
        return
    except NotFoundError:
        pass
    config.durable_name = durable
    config.filter_subject = subjects
    config.deliver_policy = config.deliver_policy or DeliverPolicy.ALL
    config.ack_policy = AckPolicy.EXPLICIT
    await js.add_consumer(stream, config)


class PullLoop:
    """Pulls batches of `batch` messages and hands each to `handler`, with `workers` at once."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        stream: str,
        durable: str,
        handler: Handler,
        batch: int,
        expires: float = 0.25,
        linger: float = 0.005,
        workers: int = 2,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._handler = handler
        self._batch = batch
        self._expires = expires
        self._linger = linger
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start the workers."""
        self._tasks = [
            asyncio.create_task(self._work(i), name=f"pull-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        """Stop pulling; a batch being handled is finished first."""
        self._stopping.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, worker: int) -> None:
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        failing = False
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await self._pull(sub, inbox)
                    failing = False
                except Exception as exc:  # NATS away or slow: pause, then pull again
                    if not failing:
                        log.warning("pull_failed", worker=worker, error=type(exc).__name__)
                    failing = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                    continue
                if msgs:
                    await self._handler(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull(self, sub: Subscription, inbox: str) -> list[Msg]:
        """One pull request: the messages JetStream delivered before the batch filled or expired."""
        queue: asyncio.Queue[Msg] = sub._pending_queue
        request = json.dumps({"batch": self._batch, "expires": int(self._expires * 1e9)}).encode()
        await self._nc.publish(self._subject, request, reply=inbox)
        msgs: list[Msg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._expires + 2.0
        while len(msgs) < self._batch:
            if queue.empty():
                # A short lull after the first message ends the batch: at low rates a result
                # is handled within milliseconds, not when the pull expires. What the pull
                # still delivers waits in the inbox for the next one.
                remaining = self._linger if msgs else deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                msg = queue.get_nowait()
            sub._pending_size -= len(msg.data)
            if msg.headers and _STATUS in msg.headers:  # 404/408/409: this pull is over
                if msg.headers[_STATUS] not in ("404", "408"):
                    log.warning(
                        "pull_status",
                        status=msg.headers[_STATUS],
                        description=msg.headers.get("Description", ""),
                    )
                break
            msgs.append(msg)
        return msgs
