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
    free-text ``note``, which workers poll while they wait for a rebuild. Layout ``N`` > 1
    keeps it in ``ls:state:LN`` (see below).

**State layout.** How the per-lead keys are laid out and encoded is versioned
(:data:`STATE_LAYOUT`), and the version is part of the generation: layout 1 (every release
so far) writes ``20261207T120000Z-0a1b2c3d4e5f``, a later layout ``N`` appends ``-LN``. The
generation is in the marker every script call checks, and the script carries the layout it
was written for, so a worker can only ever write state of its own layout: a worker meeting
another layout refuses with :class:`StateLayoutError` (at start, while it waits for a rebuild,
and inside the script itself), and a rollout that changes the layout runs ``leadscore
rebuild`` with the new version, which replays the input topics into the new layout and stops
the old workers at their next call (docs/architecture.md, "Rolling upgrades"). Each layout
keeps its status hash under its own key, so that releases from before layouts were
versioned, which know only ``ls:state``, never see a newer layout's state as ready: their
calls fail on the changed marker and they wait.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.cluster import key_slot

from leadscore.features.exceptions import FeatureStateLostError, StateLayoutError

#: The layout this release reads and writes. Bump it (and write the migration notes) when a
#: change would make an older release misread the per-lead keys or a newer one misread ours.
STATE_LAYOUT = 1

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


def status_key(layout: int = STATE_LAYOUT) -> str:
    """The status hash of ``layout`` (``ls:state`` for layout 1, as before versioning).

    >>> status_key(1), status_key(2)
    ('ls:state', 'ls:state:L2')
    """
    return STATUS_KEY if layout == 1 else f"{STATUS_KEY}:L{layout}"


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


def new_generation(layout: int = STATE_LAYOUT) -> str:
    """A fresh generation id of ``layout``; layout 1 has no suffix, as every generation
    written before layouts were versioned (their state is layout 1)."""
    gen = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(6)
    return gen if layout == 1 else f"{gen}-L{layout}"


_LAYOUT_SUFFIX = re.compile(r"-L([0-9]+)$")


def layout_of(generation: str) -> int:
    """The state layout a generation was created for.

    >>> layout_of("20261207T120000Z-0a1b2c3d4e5f"), layout_of("20261207T120000Z-0a1b2c3d4e5f-L2")
    (1, 2)
    """
    m = _LAYOUT_SUFFIX.search(generation)
    return int(m.group(1)) if m else 1


def check_layout(generation: str, layout: int = STATE_LAYOUT) -> None:
    """Raise :class:`StateLayoutError` if ``generation`` holds state of another layout."""
    found = layout_of(generation)
    if found == layout:
        return
    if found > layout:
        raise StateLayoutError(
            f"the feature state in Redis (generation {generation}) has layout {found}, written "
            f"by a newer leadscore; this worker reads layout {layout} only: finish the rollout "
            "to the newer release (to roll back instead, run this release's `leadscore "
            "rebuild`, which replays the input topics into its layout)"
        )
    raise StateLayoutError(
        f"the feature state in Redis (generation {generation}) has layout {found}, written by "
        f"an older leadscore; this release writes layout {layout}: run this release's "
        "`leadscore rebuild` (it replays the input topics into the new layout; workers of the "
        "older release stop at their next call)"
    )


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StateMarker:
    """Reads and writes the marker and the status hash on a Redis or Redis Cluster client."""

    def __init__(self, client: Any, *, cluster: bool = False, layout: int = STATE_LAYOUT) -> None:
        self._client = client
        self._cluster = cluster
        self.layout = layout
        self._status_key = status_key(layout)

    @property
    def cluster(self) -> bool:
        return self._cluster

    def _marker_keys(self, sample: bool = False) -> list[str]:
        if not self._cluster:
            return [MARKER_KEY]
        step = CHECK_EVERY_SLOT if sample else 1
        return [marker_key(s) for s in range(0, N_SLOTS, step)]

    async def status(self) -> StateStatus:
        raw = await self._client.hgetall(self._status_key)
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

    async def marker_generation(self) -> str | None:
        """The generation in the marker (the first one, on a cluster), or None."""
        value = await self._client.get(self._marker_keys(sample=True)[0])
        return None if value is None else _text(value)

    async def refuse_foreign_layout(self) -> None:
        """Raise :class:`StateLayoutError` if the marker holds another layout's generation:
        another release rebuilt the state, and this one must neither adopt nor replace it."""
        generation = await self.marker_generation()
        if generation is not None:
            check_layout(generation, self.layout)

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
            self._status_key,
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
        await self.refuse_foreign_layout()
        generation = new_generation(self.layout)
        won = await self._client.hsetnx(self._status_key, "generation", generation)
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
        and wait for ``finish_rebuild``. A rebuild by a release of another layout takes the
        state over: its marker stops every worker of the old layout for good."""
        generation = new_generation(self.layout)
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
    """Poll until the status says ``ready`` with a marker in place; return its generation.

    Raises :class:`StateLayoutError` if the ready state is of another layout (a rebuild by
    another release): adopting it would write this release's layout into it."""
    while True:
        st = await marker.status()
        if st.status == "ready" and st.generation and await marker.marker_holds(st.generation):
            check_layout(st.generation, marker.layout)
            return st.generation
        await marker.refuse_foreign_layout()
        if on_wait is not None:
            res = on_wait(st)
            if res is not None:
                await res
        await asyncio.sleep(poll_s)
