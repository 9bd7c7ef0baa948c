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

A replica that joins a running group takes its share two heartbeats after its first, when
the others have seen it and released that share, so a rolling deploy checks nothing twice.
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
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
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
    """This replica's lease and the live replicas of its region."""

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
        self._hold: asyncio.TimerHandle | None = None
        self.members: tuple[str, ...] = ()

    def owns(self, service_id: str) -> bool:
        """True when this replica checks the service (always, before any membership is seen)."""
        if len(self.members) <= 1:
            return True
        if self._hold is not None:  # just joined: the others still check our share
            return False
        return owner(service_id, self.members) == self.key

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
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._task is not None:
            self._task.cancel()
            # Bounded: a KV call stuck in the cancelled heartbeat must not hold up shutdown
            # (seen once: SIGTERM hung here until the supervisor's SIGKILL).
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
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
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

    async def _beat(self) -> None:
        assert self._kv is not None and self._js is not None
        await self._kv.put(self.key, b"1")
        info = await self._js.stream_info(
            STREAM, subjects_filter=SUBJECT_PREFIX + self._prefix + ">"
        )
        keys = {subject.removeprefix(SUBJECT_PREFIX) for subject in info.state.subjects or {}}
        live = tuple(sorted(keys | {self.key}))
        if live != self.members:
            before = self.members
            self.members = live
            if not before and len(live) > 1:
                # Joining a running group: the others see us at their next heartbeat and only
                # then drop our share. Taking it before that would check it twice, so wait
                # two heartbeats (ours and theirs are the same setting).
                self._hold = asyncio.get_running_loop().call_later(
                    2 * self._settings.heartbeat_seconds, self._take_share
                )
            log.info(
                "replicas changed",
                members=len(live),
                joined=",".join(sorted(set(live) - set(before))) or "-",
                left=",".join(sorted(set(before) - set(live))) or "-",
            )
            self._on_change()

    def _take_share(self) -> None:
        self._hold = None
        log.info("taking our share", members=len(self.members))
        self._on_change()
