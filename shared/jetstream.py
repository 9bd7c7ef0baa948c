"""Work-arounds for the JetStream client stack (faststream 0.7.8 over nats-py 2.16)."""

from __future__ import annotations

from typing import Any

import nats.errors
from faststream.nats import NatsBroker


def guard_fetch_timeouts(broker: NatsBroker) -> None:
    """Make a pull fetch's plain TimeoutError look like nats' own (call after `start()`).

    faststream 0.7.8's pull loop catches only `nats.errors.TimeoutError`, but nats-py 2.16
    raises a plain `asyncio.TimeoutError` when a fetch's deadline runs out between its two
    requests. The loop task then dies with the partial batch it had already pulled, and
    those messages wait a whole ack_wait before JetStream redelivers them.
    """
    for subscriber in broker.subscribers:
        subscription = getattr(subscriber, "subscription", None)
        if subscription is None or getattr(subscription, "_watch_guarded", False):
            continue
        fetch = subscription.fetch

        async def guarded(*args: Any, _fetch: Any = fetch, **kwargs: Any) -> Any:
            try:
                return await _fetch(*args, **kwargs)
            except nats.errors.TimeoutError:
                raise
            except TimeoutError as exc:
                raise nats.errors.TimeoutError from exc

        subscription.fetch = guarded
        subscription._watch_guarded = True
