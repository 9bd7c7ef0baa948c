"""The result buffer: in order, retried with the same id, bounded, drops the oldest, counted."""

from __future__ import annotations

import json

from services.prober.metrics import ProberMetrics
from services.prober.publish import Outgoing, ResultPublisher
from tests.factories import make_check_completed
from tests.polling import eventually


class FakeJetStream:
    """Stores what it acks; fails while `up` is False (like a NATS outage)."""

    def __init__(self) -> None:
        self.up = True
        self.attempts: list[str] = []
        self.stored: dict[str, bytes] = {}  # msg id -> payload, dedup like JetStream
        self.order: list[str] = []

    async def send(self, batch: list[Outgoing], ack_wait: float) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for o in batch:
            self.attempts.append(o.msg_id)
            if not self.up:
                outcomes.append(TimeoutError("nats: timeout"))
                continue
            assert o.subject == f"watch.check.{json.loads(o.payload)['serviceId']}"
            if o.msg_id not in self.stored:
                self.stored[o.msg_id] = o.payload
                self.order.append(o.msg_id)
            outcomes.append(None)
        return outcomes


def sample(metrics: ProberMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_results_are_published_with_check_id_as_message_id() -> None:
    js, metrics = FakeJetStream(), ProberMetrics()
    publisher = ResultPublisher(send=js.send, connected=lambda: True, capacity=100, metrics=metrics)
    publisher.start()
    results = [make_check_completed() for _ in range(5)]
    for r in results:
        publisher.submit(r)
    await eventually(lambda: _value(len(js.stored)), until=lambda n: n == 5, timeout=5)
    assert js.order == [str(r.check_id) for r in results]
    assert json.loads(js.stored[str(results[0].check_id)])["checkId"] == str(results[0].check_id)
    await publisher.stop(grace=1)
    assert publisher.depth == 0 and sample(metrics, "prober_published_total") == 5


async def test_outage_buffers_then_retries_in_order_exactly_once() -> None:
    js, metrics = FakeJetStream(), ProberMetrics()
    js.up = False
    publisher = ResultPublisher(send=js.send, connected=lambda: True, capacity=100, metrics=metrics)
    publisher.start()
    results = [make_check_completed() for _ in range(10)]
    for r in results[:6]:
        publisher.submit(r)
    await eventually(lambda: _value(len(js.attempts)), until=lambda n: n >= 6, timeout=5)
    assert js.stored == {} and publisher.depth == 6
    assert sample(metrics, "prober_publish_failures_total") >= 6
    for r in results[6:]:
        publisher.submit(r)
    js.up = True
    publisher.nudge()
    await eventually(lambda: _value(publisher.depth), until=lambda n: n == 0, timeout=10)
    assert js.order == [str(r.check_id) for r in results]
    await publisher.stop(grace=1)


async def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    js, metrics = FakeJetStream(), ProberMetrics()
    connected = False
    publisher = ResultPublisher(
        send=js.send, connected=lambda: connected, capacity=3, metrics=metrics
    )
    publisher.start()
    results = [make_check_completed() for _ in range(5)]
    for r in results:
        publisher.submit(r)
    assert publisher.depth == 3 and publisher.dropped == 2
    assert sample(metrics, "prober_buffer_dropped_total") == 2
    assert sample(metrics, "prober_buffer_depth") == 3
    connected = True
    publisher.nudge()
    await eventually(lambda: _value(publisher.depth), until=lambda n: n == 0, timeout=10)
    assert js.order == [str(r.check_id) for r in results[2:]]  # the two oldest were dropped
    await publisher.stop(grace=1)


async def _value(value: int) -> int:
    return value
