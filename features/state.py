"""The state marker: how the feature store tells its own Redis from one that lost its data.

A Redis restarted empty, flushed or swapped for another one still answers, and a worker
that kept going would score every lead from the events since the loss only. So the store
keeps a *generation*, a random id, in a marker key; every script call names the generation
its caller holds and fails (``LEADSCORE_STATE_LOST``) when the marker is missing or differs,
before it changes anything (see ``store.lua``). The worker then stops scoring until
``leadscore rebuild`` has replayed the input topics into a new generation.

Keys (outside the per-lead ``ls:{tag}:*`` keys):

``ls:marker``
    the generation (a single Redis). On a Redis Cluster one marker per hash slot,
    ``ls:{T}:g`` with a tag ``T`` of that slot, because a script may only touch keys of one
    slot: a master that comes back empty loses the markers of all its slots.
``ls:state``
    a hash: ``generation``, ``status`` (``ready`` or ``rebuilding``), ``updated_at`` and a
    free-text ``note``, which workers poll while they wait for a rebuild.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.cluster import key_slot

from leadscore.features.exceptions import FeatureStateLostError

MARKER_KEY = "ls:marker"
STATUS_KEY = "ls:state"
N_SLOTS = 16_384
#: Slots whose markers the periodic check reads on a cluster: every 64th, so that each
#: master (which owns ranges of slots) is looked at without reading 16,384 keys.
CHECK_EVERY_SLOT = 64

Status = Literal["ready", "rebuilding"]


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each cluster slot, a short hash tag that falls in it (found by counting up)."""
    tags: list[str | None] = [None] * N_SLOTS
    missing = N_SLOTS
    i = 0
    while missing:
        tag = format(i, "x")
        slot = int(key_slot(tag.encode()))
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def marker_key(slot: int | None) -> str:
    """The marker a call on ``slot`` checks (``None``: a single Redis)."""
    if slot is None:
        return MARKER_KEY
    return "ls:{" + slot_tags()[slot] + "}:g"


@dataclass(frozen=True, slots=True)
class StateStatus:
    """What ``ls:state`` says; ``generation`` is None when Redis holds no leadscore state."""

    generation: str | None
    status: Status | None
    updated_at: str = ""
    note: str = ""


def new_generation() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(6)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StateMarker:
    """Reads and writes the marker and the status hash on a Redis or Redis Cluster client."""

    def __init__(self, client: Any, *, cluster: bool = False) -> None:
        self._client = client
        self._cluster = cluster

    @property
    def cluster(self) -> bool:
        return self._cluster

    def _marker_keys(self, sample: bool = False) -> list[str]:
        if not self._cluster:
            return [MARKER_KEY]
        step = CHECK_EVERY_SLOT if sample else 1
        return [marker_key(s) for s in range(0, N_SLOTS, step)]

    async def status(self) -> StateStatus:
        raw = await self._client.hgetall(STATUS_KEY)
        d = {_text(k): _text(v) for k, v in raw.items()}
        status = d.get("status")
        return StateStatus(
            d.get("generation") or None,
            status if status in ("ready", "rebuilding") else None,  # type: ignore[arg-type]
            d.get("updated_at", ""),
            d.get("note", ""),
        )

    async def marker_holds(self, generation: str) -> bool:
        """Whether the marker (every sampled one, on a cluster) still holds ``generation``."""
        keys = self._marker_keys(sample=True)
        if not self._cluster:
            return _text(await self._client.get(keys[0]) or b"") == generation
        pipe = self._client.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        values = await pipe.execute()
        return all(v is not None and _text(v) == generation for v in values)

    async def _set_markers(self, generation: str) -> None:
        keys = self._marker_keys()
        if not self._cluster:
            await self._client.set(keys[0], generation)
            return
        pipe = self._client.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, generation)
        await pipe.execute()

    async def _write_status(self, generation: str, status: Status, note: str) -> None:
        await self._client.hset(
            STATUS_KEY,
            mapping={
                "generation": generation,
                "status": status,
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "note": note,
            },
        )

    async def create(self, note: str = "new feature store") -> str:
        """Start generation one of an empty store; if another worker won the race, its
        generation is returned instead."""
        generation = new_generation()
        won = await self._client.hsetnx(STATUS_KEY, "generation", generation)
        if not won:
            current = await self.status()
            if current.generation is None:
                raise FeatureStateLostError("the feature store's status vanished while created")
            return current.generation
        await self._set_markers(generation)
        await self._write_status(generation, "ready", note)
        return generation

    async def begin_rebuild(self, note: str) -> str:
        """A new generation for a rebuild: workers holding the old one stop at their next call
        and wait for ``finish_rebuild``."""
        generation = new_generation()
        await self._write_status(generation, "rebuilding", note)
        await self._set_markers(generation)
        return generation

    async def finish_rebuild(self, generation: str, note: str) -> None:
        current = await self.status()
        if current.generation != generation:
            raise FeatureStateLostError(
                f"another rebuild ({current.generation}) started while this one "
                f"({generation}) ran; its state is the one kept"
            )
        await self._write_status(generation, "ready", note)


async def wait_for_ready(
    marker: StateMarker,
    *,
    poll_s: float = 1.0,
    on_wait: Callable[[StateStatus], Awaitable[None] | None] | None = None,
) -> str:
    """Poll until the status says ``ready`` with a marker in place; return its generation."""
    while True:
        st = await marker.status()
        if st.status == "ready" and st.generation and await marker.marker_holds(st.generation):
            return st.generation
        if on_wait is not None:
            res = on_wait(st)
            if res is not None:
                await res
        await asyncio.sleep(poll_s)
