"""Shields-style SVG badges (flat): a grey label on the left, a coloured value on the right."""

from __future__ import annotations

from html import escape

# Colours of shields.io's flat style.
GREEN = "#4c1"
YELLOW = "#dfb317"
ORANGE = "#fe7d37"
RED = "#e05d44"
GREY = "#9f9f9f"
LABEL_GREY = "#555"

# Verdana 11px advance widths (px) of the characters badges use; others count as 7.
_WIDTHS = {
    **dict.fromkeys("ijl|.:,;!' ", 3.5),
    **dict.fromkeys("frt()-[]", 4.5),
    **dict.fromkeys("0123456789", 7.0),
    **dict.fromkeys("abcdeghknopqsuvxyz", 6.5),
    **dict.fromkeys("mw%", 10.0),
    **dict.fromkeys("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 7.5),
}
PADDING = 10  # px of space around each side's text

# Response times up to these bounds (ms) are green / yellow / orange; slower is red.
RESPONSE_TIME_STEPS = ((300.0, GREEN), (800.0, YELLOW), (2000.0, ORANGE))


def text_width(text: str) -> int:
    """The approximate rendered width of `text` in Verdana 11px."""
    return round(sum(_WIDTHS.get(c, 7.0) for c in text))


def uptime_color(uptime: float | None, sla_target: float, major_outage_below: float) -> str:
    """Green at or above the SLA target, yellow above the major-outage bound, red below."""
    if uptime is None:
        return GREY
    if uptime >= sla_target:
        return GREEN
    if uptime >= major_outage_below:
        return YELLOW
    return RED


def response_time_color(avg_ms: float | None) -> str:
    """Green up to 300 ms, yellow up to 800, orange up to 2000, red beyond; grey without data."""
    if avg_ms is None:
        return GREY
    for bound, color in RESPONSE_TIME_STEPS:
        if avg_ms <= bound:
            return color
    return RED


def format_uptime(uptime: float | None) -> str:
    """99.95% style: two decimals, trailing zeros dropped, never rounded up to 100%."""
    if uptime is None:
        return "no data"
    if 99.99 < uptime < 100:
        return "99.99%"
    return f"{uptime:.2f}".rstrip("0").rstrip(".") + "%"


def format_ms(avg_ms: float | None) -> str:
    """245ms style."""
    return "no data" if avg_ms is None else f"{round(avg_ms)}ms"


def render(label: str, value: str, color: str) -> str:
    """The SVG document of one badge."""
    lw = text_width(label) + PADDING
    vw = text_width(value) + PADDING
    total = lw + vw
    label_x, value_x = lw * 5, (lw + vw / 2) * 10  # text is drawn at scale 0.1
    lt, vt = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lt}: {vt}"><title>{lt}: {vt}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="{LABEL_GREY}"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{color}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'text-rendering="geometricPrecision" font-size="110">'
        f'<text aria-hidden="true" x="{label_x:g}" y="150" fill="#010101" fill-opacity=".3" '
        f'transform="scale(.1)">{lt}</text>'
        f'<text x="{label_x:g}" y="140" transform="scale(.1)">{lt}</text>'
        f'<text aria-hidden="true" x="{value_x:g}" y="150" fill="#010101" fill-opacity=".3" '
        f'transform="scale(.1)">{vt}</text>'
        f'<text x="{value_x:g}" y="140" transform="scale(.1)">{vt}</text></g></svg>'
    )
