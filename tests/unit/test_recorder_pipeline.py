"""The batch pipeline with fake messages and a fake store: what is acked, NAKed, dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

import asyncpg
import pytest

from services.recorder.batches import AckMany, BatchPipeline, DeadLetters
from services.recorder.dbhealth import DbHealth
from services.recorder.decode import Expired, Rejected
from services.recorder.metrics import RecorderMetrics
from shared.events import DLQ_CONSUMER_HEADER, DLQ_REASON_HEADER, DLQ_SUBJECT_HEADER
from tests.polling import eventually


class FakeMsg:
    def __init__(self, data: bytes, seq: int) -> None:
        self.data = data
        self.subject = "watch.check.svc-a"
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq))
        self._ackd = False
        self.acks = self.naks = self.progress = 0

    async def ack(self) -> None:
        self.acks += 1
        self._ackd = True

    async def nak(self, delay: float | None = None) -> None:
        self.naks += 1
        self._ackd = True

    async def in_progress(self) -> None:
        self.progress += 1


def decode(data: bytes) -> str | Rejected | Expired:
    text = data.decode()
    if text.startswith("bad"):
        return Rejected("invalid_json", f"not JSON: {text}")
    if text == "old":
        return Expired()
    return text


class FakeStore:
    """Fails while `down` is set; refuses any batch holding `refuse`."""

    def __init__(self, *, down_calls: int = 0, refuse: str | None = None, delay: float = 0):
        self.down_calls = down_calls
        self.refuse = refuse
        self.delay = delay
        self.calls: list[list[str]] = []
        self.stored: list[str] = []

    async def __call__(self, items: Sequence[str]) -> None:
        self.calls.append(list(items))
        await asyncio.sleep(self.delay)
        if self.down_calls > 0:
            self.down_calls -= 1
            raise ConnectionRefusedError("connection refused")
        if self.refuse in items:
            raise asyncpg.DataError("value out of range")
        self.stored.extend(items)


Letters = list[tuple[bytes, dict[str, str]]]


def make(
    store: FakeStore, ack_many: AckMany | None = None, **kw: float
) -> tuple[BatchPipeline[str], Letters, RecorderMetrics, asyncio.Event]:
    metrics = RecorderMetrics()
    letters: Letters = []

    async def publish(body: bytes, headers: dict[str, str]) -> None:
        letters.append((body, headers))

    stopping = asyncio.Event()
    pipeline = BatchPipeline[str](
        decode=decode,
        store=store,
        dead_letters=DeadLetters(publish=publish, consumer="recorder", metrics=metrics),
        health=DbHealth(gauge=metrics.db_up),
        metrics=metrics,
        stopping=stopping,
        ack_many=ack_many,
        backoff_start=0.001,
        backoff_max=0.01,
        **kw,
    )
    return pipeline, letters, metrics, stopping


def msgs(*bodies: str) -> list[FakeMsg]:
    return [FakeMsg(b.encode(), seq) for seq, b in enumerate(bodies, start=1)]


async def test_good_stored_in_one_call_bad_dead_lettered_expired_skipped() -> None:
    store = FakeStore()
    pipeline, letters, metrics, _ = make(store)
    batch = msgs("a", "bad-1", "b", "old", "c")
    await pipeline.handle(batch)
    assert store.calls == [["a", "b", "c"]]
    assert [m.acks for m in batch] == [1, 1, 1, 1, 1]
    assert [body for body, _ in letters] == [b"bad-1"]
    headers = letters[0][1]
    assert headers[DLQ_REASON_HEADER] == "not JSON: bad-1"
    assert headers[DLQ_SUBJECT_HEADER] == "watch.check.svc-a"
    assert headers[DLQ_CONSUMER_HEADER] == "recorder"
    assert headers["Nats-Msg-Id"] == "recorder-2"
    assert metrics.registry.get_sample_value("expired_total") == 1
    assert metrics.registry.get_sample_value("dlq_total", {"reason": "invalid_json"}) == 1
    assert metrics.registry.get_sample_value("batch_size_count") == 1


async def test_a_batch_ack_is_one_call_after_the_commit() -> None:
    store = FakeStore(down_calls=2)
    acked: list[tuple[list[str], list[str]]] = []  # (the batch acked, what was stored then)

    async def ack_many(batch: Sequence[FakeMsg]) -> None:
        acked.append(([m.data.decode() for m in batch], list(store.stored)))
        for m in batch:
            await m.ack()

    pipeline, letters, _, _ = make(store, ack_many=ack_many)
    batch = msgs("a", "bad-1", "old", "b")
    await pipeline.handle(batch)
    # The expired one is acked at once; the stored ones together, after they were committed.
    assert acked == [(["old"], []), (["a", "b"], ["a", "b"])]
    assert [m.acks for m in batch] == [1, 1, 1, 1]  # the dead-lettered one too
    assert [body for body, _ in letters] == [b"bad-1"]


async def test_database_down_holds_the_batch_then_acks_once_stored() -> None:
    store = FakeStore(down_calls=3)
    pipeline, letters, metrics, _ = make(store)
    batch = msgs("a", "b")
    await pipeline.handle(batch)
    assert len(store.calls) == 4
    assert store.stored == ["a", "b"]
    assert [(m.acks, m.naks) for m in batch] == [(1, 0), (1, 0)]
    assert letters == []
    assert metrics.registry.get_sample_value("db_up") == 1


async def test_nothing_is_acked_before_the_store_succeeds() -> None:
    store = FakeStore(down_calls=10**6)
    pipeline, _, metrics, stopping = make(store)
    batch = msgs("a", "b")
    task = asyncio.create_task(pipeline.handle(batch))

    async def calls() -> int:
        return len(store.calls)

    await eventually(calls, until=lambda n: n >= 3, interval=0.001, what="retries")
    assert [m.acks for m in batch] == [0, 0]
    assert metrics.registry.get_sample_value("db_up") == 0
    stopping.set()  # shutdown during the outage: hand the batch back at once
    await asyncio.wait_for(task, 5)
    assert [(m.acks, m.naks) for m in batch] == [(0, 1), (0, 1)]
    assert pipeline.idle.is_set()


async def test_a_refused_row_is_isolated_and_the_rest_stored() -> None:
    store = FakeStore(refuse="b")
    pipeline, letters, metrics, _ = make(store)
    batch = msgs("a", "b", "c")
    await pipeline.handle(batch)
    assert store.stored == ["a", "c"]
    assert [body for body, _ in letters] == [b"b"]
    assert letters[0][1][DLQ_REASON_HEADER].startswith("DataError: value out of range")
    assert [m.acks for m in batch] == [1, 1, 1]
    assert metrics.registry.get_sample_value("dlq_total", {"reason": "database"}) == 1


async def test_an_unexpected_error_leaves_the_batch_for_redelivery() -> None:
    async def broken(items: Sequence[str]) -> None:
        raise RuntimeError("bug")

    pipeline, letters, _, _ = make(FakeStore())
    pipeline._store = broken  # type: ignore[assignment]
    batch = msgs("a")
    await pipeline.handle(batch)
    assert [(m.acks, m.naks) for m in batch] == [(0, 0)]
    assert letters == []


async def test_a_slow_batch_tells_jetstream_it_is_in_progress() -> None:
    store = FakeStore(delay=0.05)
    pipeline, _, _, _ = make(store, heartbeat_seconds=0.01)
    batch = msgs("a")
    await pipeline.handle(batch)
    assert batch[0].progress >= 1
    assert batch[0].acks == 1


async def test_a_batch_arriving_during_shutdown_is_handed_back() -> None:
    store = FakeStore()
    pipeline, _, _, stopping = make(store)
    stopping.set()
    batch = msgs("a", "bad")
    await pipeline.handle(batch)
    assert store.calls == []
    assert [(m.acks, m.naks) for m in batch] == [(0, 1), (0, 1)]


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("x"), True),
        (asyncpg.exceptions.CannotConnectNowError("x"), True),
        (asyncpg.exceptions.AdminShutdownError("x"), True),
        (TimeoutError(), True),
        (asyncpg.DataError("x"), False),
        (asyncpg.exceptions.NotNullViolationError("x"), False),
        (RuntimeError("x"), False),
    ],
)
def test_transient_errors(exc: BaseException, transient: bool) -> None:
    from services.recorder.storage import is_refusal, is_transient

    assert is_transient(exc) is transient
    assert is_refusal(exc) is (isinstance(exc, asyncpg.PostgresError) and not transient)
