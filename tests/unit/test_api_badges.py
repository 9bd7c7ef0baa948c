"""Badge rendering and the manual-check token buckets, without I/O."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from services.api import badges
from services.api.ratelimit import RateLimiter
from services.api.settings import ApiSettings

SVG = "{http://www.w3.org/2000/svg}"


def test_badge_is_well_formed_svg_sized_to_its_text() -> None:
    svg = badges.render("uptime 30d", "99.95%", badges.GREEN)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("height") == "20"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts == ["uptime 30d", "uptime 30d", "99.95%", "99.95%"]
    longer = ET.fromstring(badges.render("uptime 30d", "100%", badges.GREEN))
    wide = ET.fromstring(badges.render("response time 365d", "100%", badges.GREEN))
    assert int(wide.get("width", "0")) > int(longer.get("width", "0"))


def test_badge_text_is_escaped() -> None:
    svg = badges.render("<x>", "a&b", badges.GREY)
    assert "&lt;x&gt;" in svg and "a&amp;b" in svg
    ET.fromstring(svg)


@pytest.mark.parametrize(
    ("uptime", "color"),
    [(None, badges.GREY), (99.9, badges.GREEN), (99.89, badges.YELLOW), (95.0, badges.YELLOW),
     (94.99, badges.RED)],
)  # fmt: skip
def test_uptime_color_follows_the_day_status_thresholds(uptime: float | None, color: str) -> None:
    assert badges.uptime_color(uptime, 99.9, 95.0) == color


@pytest.mark.parametrize(
    ("ms", "color"),
    [(None, badges.GREY), (300.0, badges.GREEN), (300.1, badges.YELLOW), (800.0, badges.YELLOW),
     (2000.0, badges.ORANGE), (2000.1, badges.RED)],
)  # fmt: skip
def test_response_time_color(ms: float | None, color: str) -> None:
    assert badges.response_time_color(ms) == color


def test_uptime_text_never_rounds_up_to_100() -> None:
    assert badges.format_uptime(99.999) == "99.99%"
    assert badges.format_uptime(100.0) == "100%"
    assert badges.format_uptime(99.5) == "99.5%"
    assert badges.format_uptime(None) == "no data"
    assert badges.format_ms(245.4) == "245ms"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_client_bucket_refills_and_clients_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        client_per_minute=6, client_burst=2, global_per_minute=600, global_burst=100, clock=clock
    )
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 10]
    assert limiter.acquire("b") == 0  # another client has its own bucket
    clock.now += 4
    assert limiter.acquire("a") == 6  # 0.4 of a token refilled: 6 s to go
    clock.now += 6
    assert limiter.acquire("a") == 0


def test_global_bucket_limits_everybody() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        client_per_minute=600, client_burst=10, global_per_minute=60, global_burst=3, clock=clock
    )
    assert [limiter.acquire(f"ip{i}") for i in range(4)] == [0, 0, 0, 1]
    clock.now += 1
    assert limiter.acquire("ip9") == 0


def test_api_settings_parse_cors_and_refuse_odd_role_names() -> None:
    s = ApiSettings(cors_origins=" https://a.example/ ,, http://localhost:5173")
    assert s.cors_origin_list == ["https://a.example", "http://localhost:5173"]
    with pytest.raises(ValueError, match="role"):
        ApiSettings(api_db_role="x; DROP TABLE services")
