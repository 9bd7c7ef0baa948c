"""Noticing that the catalog file changed, so the prober reloads it without a restart.

The file is polled (a stat per second, no inotify: it works the same on every filesystem
and on Kubernetes ConfigMap volumes, whose files change by symlink swap). A change is acted
on once the file has stayed the same for one poll, so an editor's half-written save is not
read. SIGHUP asks for a reload at once (wired in `main`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from shared.logs import get_log

log = get_log(__name__)

POLL_SECONDS = 1.0

Stamp = tuple[int, int, int] | None


def stamp(path: str) -> Stamp:
    """What identifies a version of the file: inode, size, mtime; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CatalogWatcher:
    """Calls `on_change` when the file at `path` changed since `mark()` and then settled."""

    def __init__(
        self, path: str, *, on_change: Callable[[], Awaitable[object]], poll: float = POLL_SECONDS
    ) -> None:
        self._path = path
        self._on_change = on_change
        self._poll = poll
        self._loaded: Stamp = stamp(path)
        self._task: asyncio.Task[None] | None = None

    def mark(self) -> None:
        """The file as it is now has been read (loaded or refused): do not report it again."""
        self._loaded = stamp(self._path)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalog-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        previous: Stamp = self._loaded
        while True:
            await asyncio.sleep(self._poll)
            current = stamp(self._path)
            settled = current == previous
            previous = current
            if current is None or current == self._loaded or not settled:
                continue
            try:
                await self._on_change()
            except Exception:
                log.error("catalog reload crashed", exc=True)
