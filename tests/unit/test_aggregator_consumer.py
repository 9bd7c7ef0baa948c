"""The batch handler's ack discipline with a fake store and fake messages (no I/O)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from services.aggregator.consumer import MAX_DELIVER, CheckConsumer, DbHealth
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.store import Applied
from shared.events import CheckCompleted
from shared.settings import Settings
from tests.factories import make_check_completed


@dataclass
class FakeMsg:
    data: bytes
    subject: str = "watch.check.svc-a"
    seq: int = 1
    num_delivered: int = 1
    _ackd: bool = False
    log: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(
            sequence=SimpleNamespace(stream=self.seq), num_delivered=self.num_delivered
        )

    async def ack(self) -> None:
        self._ackd = True
        self.log.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self._ackd = True
        self.log.append("nak")


class FakeBatch:
    def __init__(self, msgs: list[FakeMsg]) -> None:
        self.raw_message = msgs
        self.in_progress_calls = 0

    async def in_progress(self) -> None:
        self.in_progress_calls += 1


class FakeStore:
    """Fails as scripted, then applies every check as new."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.applied: list[CheckCompleted] = []
        self.attempts = 0

    async def ensure_days(self, days: set[Any]) -> None:
        pass

    def forget_partitions(self) -> None:
        pass

    async def apply(self, checks: list[CheckCompleted], *, now: datetime) -> Applied:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.applied += checks
        return Applied(applied=list(checks))


class FakeJs:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, **kw: Any) -> None:
        self.published.append((subject, payload, kw["headers"]))


def consumer(store: FakeStore, js: FakeJs, health: DbHealth | None = None) -> CheckConsumer:
    return CheckConsumer(
        store=store,  # type: ignore[arg-type]
        js=js,  # type: ignore[arg-type]
        metrics=AggregatorMetrics(),
        health=health or DbHealth(),
        settings=Settings(retention_days=30),
        on_events=asyncio.Event(),
    )


async def test_malformed_go_to_dlq_expired_are_acked_valid_applied() -> None:
    good = make_check_completed()
    old = make_check_completed(started_at=datetime.now(UTC) - timedelta(days=40))
    msgs = [FakeMsg(b"{nope", seq=1), FakeMsg(good.to_wire(), seq=2), FakeMsg(old.to_wire(), seq=3)]
    store, js = FakeStore([]), FakeJs()
    c = consumer(store, js)
    await c.handle(FakeBatch(msgs))  # type: ignore[arg-type]
    assert [m.log for m in msgs] == [["ack"], ["ack"], ["ack"]]
    assert [c.check_id for c in store.applied] == [good.check_id]
    [(subject, body, headers)] = js.published
    assert subject == "watch.dlq.aggregator" and body == b"{nope"
    assert headers["Watch-Dlq-Subject"] == "watch.check.svc-a"
    assert headers["Nats-Msg-Id"].startswith("dlq-aggregator-1-")


async def test_database_down_keeps_the_batch_and_acks_only_after_commit() -> None:
    msgs = [FakeMsg(make_check_completed().to_wire(), seq=i) for i in range(3)]
    outage = [ConnectionRefusedError(), asyncpg.exceptions.CannotConnectNowError("starting")]
    store, health = FakeStore(outage), DbHealth()
    batch = FakeBatch(msgs)
    await consumer(store, FakeJs(), health).handle(batch)  # type: ignore[arg-type]
    assert store.attempts == 3
    assert batch.in_progress_calls == 2  # ack_wait kept from expiring, no delivery burnt
    assert [m.log for m in msgs] == [["ack"]] * 3
    assert health.ok is True


async def test_stopping_during_an_outage_acks_nothing() -> None:
    msgs = [FakeMsg(make_check_completed().to_wire())]
    store = FakeStore([OSError("down")] * 100)
    c = consumer(store, FakeJs())
    c.stop()
    await c.handle(FakeBatch(msgs))  # type: ignore[arg-type]
    assert msgs[0].log == [] and store.applied == []


async def test_deadlock_is_retried_at_once() -> None:
    msgs = [FakeMsg(make_check_completed().to_wire())]
    store = FakeStore([asyncpg.exceptions.DeadlockDetectedError("deadlock")])
    await consumer(store, FakeJs()).handle(FakeBatch(msgs))  # type: ignore[arg-type]
    assert store.attempts == 2 and msgs[0].log == ["ack"]


async def test_unexpected_error_naks_and_dead_letters_on_the_last_delivery() -> None:
    check = make_check_completed()
    first = FakeMsg(check.to_wire(), seq=1)
    last = FakeMsg(make_check_completed().to_wire(), seq=2, num_delivered=MAX_DELIVER)
    js = FakeJs()
    store = FakeStore([ValueError("bug")])
    await consumer(store, js).handle(FakeBatch([first, last]))  # type: ignore[arg-type]
    assert first.log == ["nak"] and last.log == ["ack"]
    assert [p[1] for p in js.published] == [last.data]


async def test_a_plain_fetch_timeout_reaches_faststream_as_nats_timeout() -> None:
    import nats.errors

    from shared.jetstream import guard_fetch_timeouts

    class Subscription:
        async def fetch(self, batch: int, timeout: float | None = None) -> list[Any]:
            raise TimeoutError  # what nats-py 2.16 raises when the deadline ends mid-fetch

    subscription = Subscription()
    broker = SimpleNamespace(subscribers=[SimpleNamespace(subscription=subscription)])
    guard_fetch_timeouts(broker)  # type: ignore[arg-type]
    guard_fetch_timeouts(broker)  # type: ignore[arg-type]  # idempotent
    with pytest.raises(nats.errors.TimeoutError):
        await subscription.fetch(5, timeout=0.001)
