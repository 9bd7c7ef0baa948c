"""Several prober replicas in one region split the catalog: NATS KV leases + rendezvous hashing.

Each replica writes its key `<region>.<proberId>` in the KV bucket `watch_prober_members`
every `PROBER_HEARTBEAT_SECONDS`; the bucket's TTL (`PROBER_MEMBER_TTL_SECONDS`) deletes the
key of a replica that stopped writing. Every replica lists the live keys of its region at
each heartbeat (one STREAM.INFO request with a subject filter: the server's own snapshot of
the bucket, not `kv.keys()`, whose per-call consumer missed a key being rewritten about once
in 200 calls) and owns the services whose rendezvous hash (highest `hash(member, service)`)
picks it, so all replicas agree without talking to each other, and a member leaving moves
only its own share. Together with wall-clock phases (`schedule.wall_phase`) the new owner
checks a service at the same instants as the old one.

A replica that joins a running group takes its share at an instant all replicas agree on
(its join time, written in its lease, plus two heartbeats; see `Membership`), so a rolling
deploy checks nothing twice and skips nothing.
A replica that dies is dropped after at most TTL + one heartbeat; one that stops cleanly
purges its key (no delete marker left behind), so its share moves within one heartbeat.
While NATS is unreachable a replica keeps the last membership it saw (its results are
buffered anyway); before it has seen any, it checks everything: monitoring never waits for
the cluster.

Why leases and not a JetStream work queue: a work queue would need a producer of "check X
now" messages (a single scheduler, itself needing leader election) and one message per check
(1,700/s at 50k endpoints). Leases cost one KV write per replica per heartbeat, and the
schedule stays local and drift-free.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.logs import get_log

log = get_log(__name__)

BUCKET = "watch_prober_members"
STREAM = f"KV_{BUCKET}"  # the stream behind the bucket, and its subjects
SUBJECT_PREFIX = f"$KV.{BUCKET}."
_KEY_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")


class ClusterSettings(BaseSettings):
    """How replicas find each other (environment, prefix PROBER_)."""

    model_config = SettingsConfigDict(env_prefix="PROBER_", extra="ignore", frozen=True)

    sharding: bool = Field(
        default=True, description="Split the catalog between replicas of a region."
    )
    heartbeat_seconds: float = Field(default=1.0, gt=0, le=60)
    member_ttl_seconds: float = Field(default=5.0, gt=0, le=600)


def owner(service_id: str, members: tuple[str, ...]) -> str:
    """The member that checks `service_id`: highest rendezvous hash wins."""
    return max(
        members,
        key=lambda m: hashlib.blake2b(f"{m}\n{service_id}".encode(), digest_size=8).digest(),
    )


def member_key(region: str, prober_id: str) -> str:
    """`<region>.<proberId>`, with characters a KV key cannot hold replaced by `_`."""
    return f"{_KEY_UNSAFE.sub('_', region)}.{_KEY_UNSAFE.sub('_', prober_id)}"


class Membership:
    """This replica's lease and the live replicas of its region.

    A replica's lease holds the wall-clock time it joined. A member counts for ownership from
    `joined + 2 heartbeats` on, and every replica computes that instant from the same value, so
    the joiner takes its share and the old owners let it go at the same moment: no turn is
    checked twice or skipped (up to clock skew between the hosts). Two heartbeats leave time
    for every replica to have seen the newcomer first. When no member has reached its instant
    yet (a group forming from nothing) they all count at once.
    """

    def __init__(
        self,
        *,
        region: str,
        prober_id: str,
        settings: ClusterSettings,
        on_change: Callable[[], None],
    ) -> None:
        self.key = member_key(region, prober_id)
        self._prefix = self.key.partition(".")[0] + "."
        self._settings = settings
        self._on_change = on_change
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._leaving = False
        self._in_beat = False
        self._joined = time.time()  # the lease's value, the same for the process's life
        self._counts_from: dict[str, float] = {}  # each member -> wall time it owns its share
        self._settle_timer: asyncio.TimerHandle | None = None
        self.members: tuple[str, ...] = ()  # every live lease of the region
        self.owners: tuple[str, ...] = ()  # the members that own their share now
        self.changed_at = self._joined  # wall time the owners last changed (see _settle)

    def owns(self, service_id: str) -> bool:
        """True when this replica checks the service (always, before any membership is seen)."""
        if not self.owners:
            return True
        return owner(service_id, self.owners) == self.key

    async def join(self, *, js: JetStreamContext) -> None:
        """Write the lease, read the members once, then keep both fresh in the background."""
        ttl = self._settings.member_ttl_seconds
        self._js = js
        try:
            self._kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            self._kv = await js.create_key_value(
                bucket=BUCKET, ttl=ttl, history=1, description="Live prober replicas (leases)."
            )
        await self._beat()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prober-heartbeat")

    async def leave(self) -> None:
        """Stop the heartbeat and remove the lease, so the others take over at once."""
        self._leaving = True
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._task is not None:
            # Asleep, the heartbeat is cancelled. In a beat, it is let finish: a put cancelled
            # in flight can still be stored after the purge below (JetStream stores and purges
            # on separate paths) and bring the lease back until its TTL; and Python 3.11's
            # wait_for inside nats-py can swallow a cancel that meets a reply. The flag ends
            # the loop after the beat. Bounded: a beat stuck on a dead connection must not
            # hold up shutdown (seen once: SIGTERM hung here until the supervisor's SIGKILL).
            if not self._in_beat:
                self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
        if self._js is not None:
            try:
                purge = self._js.purge_stream(STREAM, subject=SUBJECT_PREFIX + self.key)
                await asyncio.wait_for(purge, 2.0)
            except Exception as exc:  # NATS down: the TTL removes the lease instead
                log.warning("lease not deleted", error=type(exc).__name__)

    async def _run(self) -> None:
        failing = False
        while not self._leaving:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            if self._leaving:
                return
            self._in_beat = True
            try:
                # A beat that outlives its lease is worthless; never let one hang the loop.
                async with asyncio.timeout(max(2.0, self._settings.member_ttl_seconds)):
                    await self._beat()
                if failing:
                    log.info("heartbeat recovered", members=len(self.members))
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning(
                        "heartbeat failed, keeping the last membership",
                        members=len(self.members),
                        error=f"{type(exc).__name__}: {exc}".strip(": "),
                    )
                failing = True
            finally:
                self._in_beat = False

    async def _beat(self) -> None:
        assert self._kv is not None and self._js is not None
        if self._leaving:
            return
        await self._kv.put(self.key, repr(self._joined).encode())
        info = await self._js.stream_info(
            STREAM, subjects_filter=SUBJECT_PREFIX + self._prefix + ">"
        )
        keys = {subject.removeprefix(SUBJECT_PREFIX) for subject in info.state.subjects or {}}
        keys.add(self.key)
        delay = 2 * self._settings.heartbeat_seconds
        for key in sorted(keys - self._counts_from.keys()):
            joined = self._joined if key == self.key else await self._joined_at(key)
            if joined is None:  # gone between the listing and the read
                keys.discard(key)
            else:
                self._counts_from[key] = joined + delay
        for key in self._counts_from.keys() - keys:
            del self._counts_from[key]
        live = tuple(sorted(keys))
        if live != self.members:
            before = self.members
            self.members = live
            log.info(
                "replicas changed",
                members=len(live),
                joined=",".join(sorted(set(live) - set(before))) or "-",
                left=",".join(sorted(set(before) - set(live))) or "-",
            )
        self._settle()

    async def _joined_at(self, key: str) -> float | None:
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        try:
            return float((entry.value or b"").decode())
        except ValueError:  # not a time (an older prober's lease): it counts already
            return 0.0

    def _settle(self) -> None:
        """Recompute the owners now; wake up again when the next member's instant comes."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._leaving:
            return
        now = time.time()
        counting = tuple(m for m in self.members if self._counts_from[m] <= now)
        owners = counting or self.members
        if owners != self.owners:
            # The instant the change counts from: a newcomer's agreed instant when reaching it
            # is what moved the owners (this timer fires a little after it), else now.
            reached = [
                self._counts_from[m]
                for m in counting
                if m not in self.owners and self._counts_from[m] > now - 1.0
            ]
            self.changed_at = max(reached, default=now)
            self.owners = owners
            log.info("share changed hands", owners=len(owners), members=len(self.members))
            self._on_change()
        upcoming = [t for t in self._counts_from.values() if t > now]
        if upcoming:
            loop = asyncio.get_running_loop()
            self._settle_timer = loop.call_later(min(upcoming) - now, self._settle)
