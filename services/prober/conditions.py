"""Conditions on a response, written in the catalog the way Gatus users write them.

    condition := left OP right            OP: ==  !=  <  <=  >  >=
    left      := [STATUS] | [RESPONSE_TIME] | [BODY]<path> | len([BODY]<path>)
               | has([BODY]<path>) | [HEADER].<name>
    path      := ( .key | [index] )*      e.g. [BODY].data.items[0].id
    right     := a number, true, false, null, pat(<glob>), any(a, b, ...) or text (UP, "a b")

`==` compares numerically when both sides are numbers, else as text (a JSON `true` is the
text `true`). `<`, `<=`, `>`, `>=` need numbers on both sides. `pat(*ok*)` is a glob, case
sensitive; `any(200, 201)` is true when the left side equals one of them. A path that does not
exist makes the condition fail ("[BODY].data.count is missing"), except inside `has(...)`.
Conditions are parsed once, when the catalog is loaded; a bad one is a catalog error.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["==", "!=", "<", "<=", ">", ">="]
Source = Literal["status", "response_time", "body", "len", "has", "header"]

_CONDITION = re.compile(r"^\s*(?P<left>.+?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<right>.*?)\s*$")
_WRAPPED = re.compile(r"^(len|has)\((.*)\)$")
_PATH_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
_HEADER = re.compile(r"^\[HEADER\]\.([!#$%&'*+\-.^_`|~0-9A-Za-z]+)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
MAX_SEEN = 80


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says what is wrong."""


class _Missing:
    def __repr__(self) -> str:
        return "missing"


MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class Context:
    """What a response offers to conditions."""

    status: int
    response_time_ms: float
    text: str
    headers: Mapping[str, str]


def decode_json(text: str) -> Any:
    """The body as JSON, or MISSING when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return MISSING


@dataclass(frozen=True)
class Condition:
    """One parsed condition; `text` is how the catalog wrote it."""

    text: str
    source: Source
    path: tuple[str | int, ...]
    header: str
    op: Op
    right: tuple[str, ...]
    pattern: bool = False

    @property
    def needs_json(self) -> bool:
        return self.source in ("len", "has") or (self.source == "body" and bool(self.path))

    def check(self, ctx: Context, body: Any) -> str | None:
        """None when it holds, else what was seen: `[BODY].status is "DOWN"`."""
        left = self._left(ctx, body)
        label = self._label()
        if left is MISSING:
            if self.needs_json and body is MISSING:
                return "body is not JSON"
            return f"{label} is missing"
        if self._holds(left):
            return None
        return f"{label} is {_show(left)}"

    def _label(self) -> str:
        if self.source == "status":
            return "[STATUS]"
        if self.source == "response_time":
            return "[RESPONSE_TIME]"
        if self.source == "header":
            return f"[HEADER].{self.header}"
        inner = "[BODY]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return f"{self.source}({inner})" if self.source in ("len", "has") else inner

    def _left(self, ctx: Context, body: Any) -> Any:
        if self.source == "status":
            return ctx.status
        if self.source == "response_time":
            return round(ctx.response_time_ms, 3)
        if self.source == "header":
            value = ctx.headers.get(self.header)
            return MISSING if value is None else value
        if self.source == "body" and not self.path:
            return ctx.text
        found = _lookup(body, self.path)
        if self.source == "has":
            return found is not MISSING
        if self.source == "len":
            if found is MISSING:
                return MISSING
            return len(found) if isinstance(found, list | dict | str) else MISSING
        return found

    def _holds(self, left: Any) -> bool:
        if self.op in ("==", "!="):
            equal = any(_equal(left, r, pattern=self.pattern) for r in self.right)
            return equal if self.op == "==" else not equal
        a, b = _number(left), _number(self.right[0])
        if a is None or b is None:
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]


def parse_condition(text: str) -> Condition:
    """Parse one condition; raise `ConditionError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("a condition must be a non-empty string like '[STATUS] == 200'")
    match = _CONDITION.match(text)
    if not match:
        raise ConditionError(
            f"{text!r} has no comparison: use ==, !=, <, <=, > or >= (e.g. '[BODY].status == UP')"
        )
    left, op, right = match.group("left"), match.group("op"), match.group("right")
    source, path, header = _parse_left(left, text)
    if not right:
        raise ConditionError(f"{text!r} has nothing right of {op}")
    values, pattern = _parse_right(right, text)
    if op not in ("==", "!=") and (pattern or len(values) != 1 or _number(values[0]) is None):
        raise ConditionError(f"{text!r}: {op} needs a number on the right")
    return Condition(
        text=text.strip(),
        source=source,
        path=path,
        header=header,
        op=op,  # type: ignore[arg-type]
        right=values,
        pattern=pattern,
    )


def _parse_left(left: str, text: str) -> tuple[Source, tuple[str | int, ...], str]:
    if left == "[STATUS]":
        return "status", (), ""
    if left == "[RESPONSE_TIME]":
        return "response_time", (), ""
    if m := _HEADER.match(left):
        return "header", (), m.group(1).lower()
    source: Source = "body"
    if m := _WRAPPED.match(left):
        source, left = m.group(1), m.group(2).strip()  # type: ignore[assignment]
    if not left.startswith("[BODY]"):
        raise ConditionError(
            f"{text!r}: left side must be [STATUS], [RESPONSE_TIME], [BODY], [BODY].path, "
            "len([BODY].path), has([BODY].path) or [HEADER].name"
        )
    rest = left[len("[BODY]") :]
    path: list[str | int] = []
    pos = 0
    for part in _PATH_PART.finditer(rest):
        if part.start() != pos:
            break
        path.append(part.group(1) if part.group(1) is not None else int(part.group(2)))
        pos = part.end()
    if pos != len(rest):
        raise ConditionError(f"{text!r}: cannot read the path {rest!r} (use .key and [index])")
    return source, tuple(path), ""


def _parse_right(right: str, text: str) -> tuple[tuple[str, ...], bool]:
    if right.startswith("pat(") and right.endswith(")"):
        return (_unquote(right[4:-1]),), True
    if right.startswith("any(") and right.endswith(")"):
        values = tuple(_unquote(v) for v in right[4:-1].split(","))
        if not all(values):
            raise ConditionError(f"{text!r}: any(...) needs comma-separated values")
        return values, False
    return (_unquote(right),), False


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _lookup(body: Any, path: tuple[str | int, ...]) -> Any:
    current = body
    for part in path:
        found = (isinstance(part, int) and isinstance(current, list) and part < len(current)) or (
            isinstance(part, str) and isinstance(current, dict) and part in current
        )
        if not found:
            return MISSING
        current = current[part]
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, separators=(",", ":"))


def _equal(left: Any, right: str, *, pattern: bool) -> bool:
    if pattern:
        return fnmatch.fnmatchcase(_text(left), right)
    a, b = _number(left), _number(right)
    if a is not None and b is not None and not isinstance(left, str):
        return a == b
    return _text(left) == right


def _show(value: Any) -> str:
    shown = json.dumps(value) if isinstance(value, str) else _text(value)
    return shown if len(shown) <= MAX_SEEN else shown[: MAX_SEEN - 3] + "..."
