"""The online feature store: per-lead state in Redis, updated by one Lua call per batch."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import orjson
import redis.asyncio as aioredis
from redis.cluster import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from leadscore.features.alerting import AlertPolicy
from leadscore.features.definitions import RETENTION_MS, SPECS, Spec, event_kind
from leadscore.features.exceptions import (
    FeatureStateLostError,
    FeatureStoreUnavailableError,
    StateLayoutError,
)
from leadscore.features.lua import render_script
from leadscore.features.ordered import OrderedScriptCalls
from leadscore.features.retry import Backoff
from leadscore.features.state import STATE_LAYOUT, StateMarker, check_layout, marker_key
from leadscore.features.wire import (
    RESULT_SEP,
    STATE_LAYOUT_REPLY,
    STATE_LOST_REPLY,
    parse_vector,
    profile_updates,
)
from leadscore.schemas import FeatureValue
from leadscore.schemas.validation import Event

log = logging.getLogger(__name__)

# Keys outlive the longest window by a week, so an idle lead's state expires on its own.
DEFAULT_TTL_S = (RETENTION_MS // 1000) + 7 * 86_400


#: Percent-escapes of the three characters that can't appear in a hash tag as they are
#: (``%`` included, so that an escape can't be forged by an id that spells one).
_TAG_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def hash_tag(lead_id: str) -> str:
    """The Redis Cluster hash tag of a lead: ``{lead_id}`` with ``%``, ``{`` and ``}``
    percent-escaped.

    Redis hashes only what lies between the first ``{`` and the next ``}``; an id containing
    braces (valid in the schema) would cut the tag short and scatter the lead's keys over
    several slots. Escaping keeps the mapping one-to-one: two distinct ids never share keys
    (a digest cut short, used before, let a chosen id collide with another).
    """
    return "{" + lead_id.translate(_TAG_ESCAPES) + "}"


def lead_slot(lead_id: str) -> int:
    """The Redis Cluster slot that holds every key of the lead."""
    return int(key_slot(hash_tag(lead_id).encode()))


class LeadKeys(NamedTuple):
    """A lead's Redis keys; they share one hash tag (one cluster slot)."""

    state: str
    """MessagePack of the lead's counters, recency and profile (see store.lua)."""
    ids: str
    """Sorted set of applied event ids (dedupe)."""
    latest: str
    """The lead's latest score record."""
    pending: str
    """Feature vectors of applied events whose scores are not yet confirmed delivered."""
    announced: str
    """The tier the lead's last tier-change alert announced (features/alerting.py)."""


# Cached: the worker needs a lead's keys for every event and for its confirmation in the
# next batch, and active leads recur. Small, as new leads keep arriving and a larger cache
# showed up as memory growth in the soak (docs/performance.md).
@functools.lru_cache(maxsize=4096)
def lead_keys(lead_id: str) -> LeadKeys:
    tag = hash_tag(lead_id)
    return LeadKeys(f"ls:{tag}:b", f"ls:{tag}:i", f"ls:{tag}:r", f"ls:{tag}:p", f"ls:{tag}:a")


def erased_key(lead_id: str) -> str:
    """The key that says the lead was erased (its value: when, in epoch ms), kept for the
    suppression period. The script reads the marker in the lead's state key instead (no key
    more per event); this one is for readers outside it (the archiver)."""
    return f"ls:{hash_tag(lead_id)}:x"


def erased_state(erased_at_ms: int) -> bytes:
    """The state an erased lead keeps for the suppression period: MessagePack of
    ``{x = erased_at_ms}`` and nothing else (store.lua drops its events)."""
    return b"\x81\xa1x\xd3" + erased_at_ms.to_bytes(8, "big", signed=True)


# Erasing one or more leads in one atomic call (the leads' keys in one slot on a cluster):
# KEYS per lead: state, ids, latest, pending, announced, erased; ARGV: the erased state, the
# suppression in seconds, 'e' (erase and suppress) or 's' (sweep: delete what an in-flight
# batch may have written since, keep the suppression). Returns per lead the keys deleted
# (the suppression marker of an earlier erasure not counted).
_ERASE_LUA = """
local out = {}
for j = 1, #KEYS, 6 do
  local n
  if ARGV[3] == 'e' then
    local old = redis.call('GET', KEYS[j])
    n = redis.call('DEL', KEYS[j], KEYS[j + 1], KEYS[j + 2], KEYS[j + 3], KEYS[j + 4])
    if old and string.sub(old, 1, 3) == '\\129\\161x' then n = n - 1 end
    redis.call('SET', KEYS[j], ARGV[1], 'EX', ARGV[2])
    redis.call('SET', KEYS[j + 5], ARGV[4], 'EX', ARGV[2])
  else
    n = redis.call('DEL', KEYS[j + 1], KEYS[j + 2], KEYS[j + 3], KEYS[j + 4])
  end
  out[#out + 1] = n
end
return out
"""


UpdateOutcome = Literal["ok", "dup", "late", "redelivered", "erased", "opted_out", "error"]
Confirmation = tuple[str, str]
"""(lead_id, event_id) of an event whose score record reached the broker."""


#: The script's replies that carry no vector: duplicate, late, erased lead.
_BARE: dict[str, UpdateOutcome] = {"D": "dup", "L": "late", "X": "erased", "O": "opted_out"}


class Update:
    """What applying one event did: ``ok`` with the lead's features after it, dup or late;
    ``redelivered``: applied before but its score never confirmed, with the features it had;
    ``erased``: the lead was erased (its events are dropped for the suppression period);
    ``opted_out``: applied, but the lead opted out of scoring (no vector, no score);
    ``error``: the store failed on this event alone (``error`` says why).

    The Redis store hands over the feature vector as the script returned it (``vector``:
    fields in ``specs`` order, unit-separated) and parses it only when ``features`` is read:
    the worker feeds vectors to the model column-wise without a dict per event.
    """

    __slots__ = ("outcome", "vector", "specs", "error", "_features")

    def __init__(
        self,
        outcome: UpdateOutcome,
        features: dict[str, FeatureValue] | None = None,
        *,
        vector: str | None = None,
        specs: tuple[Spec, ...] = SPECS,
        error: str = "",
    ) -> None:
        self.outcome = outcome
        self.vector = vector
        self.specs = specs
        self.error = error
        self._features = features

    @property
    def features(self) -> dict[str, FeatureValue] | None:
        if self._features is None and self.vector is not None:
            self._features = parse_vector(self.vector, self.specs)
        return self._features

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Update):
            return NotImplemented
        return self.outcome == other.outcome and self.features == other.features

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Update({self.outcome!r}, {self.features!r})"


class FeatureStore(Protocol):
    """What the worker needs from a feature store (Redis in production, memory in unit tests)."""

    @property
    def ordered(self) -> bool:
        """Concurrent ``apply_batch`` calls are applied in the order they were made."""
        ...

    async def apply_batch(
        self, events: Sequence[Event], confirm: Sequence[Confirmation] = ()
    ) -> list[Update]:
        """Apply events in order; first forget the pending vectors of ``confirm``."""
        ...

    async def read(
        self, lead_id: str, at_ms: int | None = None
    ) -> dict[str, FeatureValue] | None: ...

    async def save_scores(
        self, records: Sequence[dict[str, Any]], encoded: Sequence[bytes] | None = None
    ) -> dict[str, str | None]:
        """Keep each lead's latest record; return each lead's tier before this call.

        ``encoded``, if given, holds each record as JSON already (the worker has it from
        publishing), so a store that keeps JSON needn't serialise the records again.
        """
        ...

    async def save_and_decide(
        self,
        records: Sequence[dict[str, Any]],
        encoded: Sequence[bytes],
        policy: AlertPolicy,
        thresholds: Callable[[str], tuple[float, float]],
    ) -> dict[str, str]:
        """Keep each lead's latest record and decide whether it announces a tier change
        (:func:`leadscore.features.alerting.decide`); ``thresholds`` gives a model version's
        (hot, warm) bounds. Returns each lead's decision."""
        ...

    async def latest_score(self, lead_id: str) -> dict[str, Any] | None: ...

    async def erase(self, lead_ids: Sequence[str], suppress_s: int, now_ms: int) -> dict[str, int]:
        """Delete each lead's state and keep only a suppression marker for ``suppress_s``:
        the lead's events are dropped (``erased``) until it expires. Returns the keys
        deleted per lead."""
        ...

    async def sweep(self, lead_ids: Sequence[str]) -> dict[str, int]:
        """Delete what a batch in flight during :meth:`erase` wrote for the leads since (the
        latest score, pending vectors); the suppression stays. Returns keys deleted."""
        ...

    async def durable(self) -> None:
        """Return once every write made so far is on the replicas the store is configured to
        wait for (none: at once); raise :class:`FeatureStoreUnavailableError` otherwise."""
        ...


def _raise_if_state_lost(exc: ResponseError) -> None:
    """The script's state-lost error reply becomes a :class:`FeatureStateLostError`, its
    layout reply a :class:`StateLayoutError`."""
    if str(exc).startswith(STATE_LAYOUT_REPLY):
        raise StateLayoutError(
            f"{str(exc).removeprefix(STATE_LAYOUT_REPLY).strip()}: another leadscore release "
            "rebuilt the feature state; this worker must not write it (finish the rollout)"
        ) from exc
    if str(exc).startswith(STATE_LOST_REPLY):
        raise FeatureStateLostError(
            "Redis lost the feature store's state (marker missing or changed); "
            "run `leadscore rebuild`"
        ) from exc


HistoryCheck = Callable[[], Awaitable[bool]]
"""Whether events were processed into this store before (the worker asks Kafka whether its
consumer group has committed offsets): an empty Redis then means lost state, not a new one."""


class RedisFeatureStore:
    """Feature store on Redis: one EVALSHA per batch, retried with backoff while Redis is away."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        specs: tuple[Spec, ...] = SPECS,
        ttl_s: int = DEFAULT_TTL_S,
        max_backoff_s: float = 5.0,
        retry_for_s: float | None = None,
        per_slot: bool = False,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        layout: int = STATE_LAYOUT,
        script: str | None = None,
    ) -> None:
        """``layout`` and ``script`` (the Lua source) default to this release's; the tests
        set them to play another release beside this one."""
        self._client = client
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        # On Redis Cluster one script call may only touch keys of one slot: split each batch
        # by the leads' cluster slots (a lead's events stay in one call, in order).
        self._per_slot = per_slot
        self.marker = StateMarker(client, cluster=per_slot, layout=layout)
        self.generation = ""
        """The state generation every call checks (``open`` sets it): until then, and after
        Redis lost its data, calls fail with :class:`FeatureStateLostError`."""
        self._specs = specs
        self._ttl_s = ttl_s
        script = script or render_script(specs, ttl_s, layout)
        self._script = client.register_script(script)
        self._max_backoff_s = max_backoff_s
        self._retry_for_s = retry_for_s
        # Batch updates go out on a connection of their own, in call order (features/
        # ordered.py); on a cluster they are split by slot over the cluster's connections.
        self._ordered = (
            None
            if per_slot
            else OrderedScriptCalls(
                client,
                script,
                self._script.sha,
                max_backoff_s=max_backoff_s,
                retry_for_s=retry_for_s,
            )
        )

    @property
    def ordered(self) -> bool:
        """Concurrent ``apply_batch`` calls are applied in the order they were made."""
        return self._ordered is not None

    async def open(self, has_history: HistoryCheck | None = None) -> str:
        """Adopt the store's state generation, or start the first one on an empty store.

        Raises :class:`FeatureStateLostError` when a rebuild is running, or when Redis holds
        no leadscore state although ``has_history`` says events were processed before;
        :class:`StateLayoutError` when the state is of another layout (another release).
        """
        st = await self.marker.status()
        if st.generation is not None:
            check_layout(st.generation, self.marker.layout)
            if st.status != "ready":
                raise FeatureStateLostError(
                    f"the feature store is being rebuilt (generation {st.generation}, "
                    f"{st.updated_at}): scoring resumes when `leadscore rebuild` finishes"
                )
            if not await self.marker.marker_holds(st.generation):
                await self.marker.refuse_foreign_layout()
                raise FeatureStateLostError(
                    "the feature store's marker is missing: Redis lost its data; "
                    "run `leadscore rebuild`"
                )
            self.generation = st.generation
            return st.generation
        if has_history is not None and not await self._has_lead_keys() and await has_history():
            raise FeatureStateLostError(
                "Redis holds no feature state, but events were processed before (the consumer "
                "group has committed offsets): Redis lost its data; run `leadscore rebuild`"
            )
        # Empty (a new deployment), or state written before markers existed: adopt it.
        self.generation = await self.marker.create()
        return self.generation

    async def _has_lead_keys(self, rounds: int = 50) -> bool:
        """Whether any per-lead key exists, looking at a bounded part of the keyspace."""
        if self._per_slot:
            async for _ in self._client.scan_iter(match="ls:{*", count=1000):
                return True
            return False
        cursor: Any = 0
        for _ in range(rounds):
            cursor, keys = await self._client.scan(cursor, match="ls:{*", count=1000)
            if keys:
                return True
            if not int(cursor):
                return False
        return True

    async def check(self) -> None:
        """Raise :class:`FeatureStateLostError` if the marker no longer holds the generation
        (the worker's readiness check calls this between batches)."""
        if not self.generation or not await self.marker.marker_holds(self.generation):
            await self.marker.refuse_foreign_layout()
            raise FeatureStateLostError(
                "the feature store's marker is missing or changed: Redis lost its data "
                "(or a rebuild started); run `leadscore rebuild`"
            )

    async def close(self) -> None:
        """Close the batch-update connection (the client is the caller's to close)."""
        if self._ordered is not None:
            await self._ordered.close()

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def _call(self, keys: list[str], args: list[Any]) -> Any:
        backoff = Backoff(self._max_backoff_s, self._retry_for_s)
        while True:
            try:
                return await self._script(keys=keys, args=args)
            except ResponseError as exc:
                _raise_if_state_lost(exc)
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                await backoff.wait(exc)

    async def apply_batch(
        self, events: Sequence[Event], confirm: Sequence[Confirmation] = ()
    ) -> list[Update]:
        if not events and not confirm:
            return []
        if not self._per_slot:
            raw = await self._apply(events, confirm, None)
        else:
            groups: dict[int, tuple[list[int], list[Confirmation]]] = {}
            for i, ev in enumerate(events):
                groups.setdefault(lead_slot(ev.lead_id), ([], []))[0].append(i)
            for conf in confirm:
                groups.setdefault(lead_slot(conf[0]), ([], []))[1].append(conf)
            results = await asyncio.gather(
                *(
                    self._apply([events[i] for i in idx], confs, slot)
                    for slot, (idx, confs) in groups.items()
                )
            )
            raw = [""] * len(events)
            for (idx, _), res in zip(groups.values(), results, strict=True):
                for i, item in zip(idx, res, strict=True):
                    raw[i] = item
        out: list[Update] = []
        specs = self._specs
        for text in raw:
            head = text[0]
            if head == "F":
                out.append(Update("ok", vector=text[1:], specs=specs))
            elif head in _BARE:
                out.append(Update(_BARE[head]))
            elif head == "E":
                out.append(Update("error", error=text[1:]))
            else:
                out.append(Update("redelivered", vector=text[1:], specs=specs))
        return out

    async def _apply(
        self, events: Sequence[Event], confirm: Sequence[Confirmation], slot: int | None
    ) -> list[str]:
        keys: list[str] = [marker_key(slot)]
        args: list[Any] = ["u", self.generation, len(events), len(confirm)]
        for ev in events:
            k = lead_keys(ev.lead_id)
            keys += [k.state, k.ids, k.pending]
            prof = profile_updates(ev)
            args += [
                ev.event_id,
                ev.ts_ms,
                event_kind(ev.source, ev.type, ev.attributes),
                orjson.dumps(prof).decode() if prof else "",
            ]
        for lead_id, event_id in confirm:
            keys.append(lead_keys(lead_id).pending)
            args.append(event_id)
        if self._ordered is not None:
            try:
                reply = await self._ordered.call(keys, args)
            except ResponseError as exc:
                _raise_if_state_lost(exc)
                raise
        else:
            reply = await self._call(keys, args)
        if not events:
            return []
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return text.split(RESULT_SEP)

    async def read(self, lead_id: str, at_ms: int | None = None) -> dict[str, FeatureValue] | None:
        slot = lead_slot(lead_id) if self._per_slot else None
        raw = await self._call(
            [marker_key(slot), lead_keys(lead_id).state],
            ["r", self.generation, "" if at_ms is None else at_ms],
        )
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        return parse_vector(text, self._specs)

    async def save_scores(
        self, records: Sequence[dict[str, Any]], encoded: Sequence[bytes] | None = None
    ) -> dict[str, str | None]:
        # The latest record per lead wins; records arrive in per-lead order within a batch.
        last: dict[str, int] = {r["lead_id"]: i for i, r in enumerate(records)}
        if not last:
            return {}
        latest = {
            lead_id: encoded[i] if encoded is not None else orjson.dumps(records[i])
            for lead_id, i in last.items()
        }
        if not self._per_slot:
            tiers = await self._save(list(latest.items()), None)
        else:
            groups: dict[int, list[tuple[str, bytes]]] = {}
            for item in latest.items():
                groups.setdefault(lead_slot(item[0]), []).append(item)
            parts = await asyncio.gather(*(self._save(g, slot) for slot, g in groups.items()))
            tiers = {k: v for part in parts for k, v in part.items()}
        return tiers

    async def _save(
        self, items: list[tuple[str, bytes]], slot: int | None
    ) -> dict[str, str | None]:
        """One script call (not one SET per lead: command packing cost more than the write)
        stores the records and returns each lead's previous tier."""
        keys = [marker_key(slot), *(lead_keys(lead_id).latest for lead_id, _ in items)]
        args: list[Any] = ["s", self.generation, *(payload for _, payload in items)]
        previous = await self._call(keys, args)
        return {
            lead_id: (old.decode() if isinstance(old, bytes) else old) if old else None
            for (lead_id, _), old in zip(items, previous, strict=True)
        }

    async def save_and_decide(
        self,
        records: Sequence[dict[str, Any]],
        encoded: Sequence[bytes],
        policy: AlertPolicy,
        thresholds: Callable[[str], tuple[float, float]],
    ) -> dict[str, str]:
        last: dict[str, int] = {r["lead_id"]: i for i, r in enumerate(records)}
        if not last:
            return {}
        items = [(lead, records[i], encoded[i]) for lead, i in last.items()]
        if not self._per_slot:
            return await self._decide(items, None, policy, thresholds)
        groups: dict[int, list[tuple[str, dict[str, Any], bytes]]] = {}
        for item in items:
            groups.setdefault(lead_slot(item[0]), []).append(item)
        parts = await asyncio.gather(
            *(self._decide(g, slot, policy, thresholds) for slot, g in groups.items())
        )
        return {k: v for part in parts for k, v in part.items()}

    async def _decide(
        self,
        items: list[tuple[str, dict[str, Any], bytes]],
        slot: int | None,
        policy: AlertPolicy,
        thresholds: Callable[[str], tuple[float, float]],
    ) -> dict[str, str]:
        keys = [marker_key(slot)]
        args: list[Any] = ["a", self.generation, policy.now_ms, repr(policy.margin)]
        args.append(policy.interval_ms)
        bounds: dict[str, tuple[str, str]] = {}  # per version, not per lead
        for lead_id, rec, payload in items:
            k = lead_keys(lead_id)
            keys += [k.latest, k.announced]
            version = rec["model_version"]
            b = bounds.get(version)
            if b is None:
                hot, warm = thresholds(version)
                b = bounds[version] = (repr(hot), repr(warm))
            args += [payload, repr(float(rec["score"])), rec["tier"], b[0], b[1], version]
        reply = await self._call(keys, args)
        return {
            lead_id: (d.decode() if isinstance(d, bytes) else str(d))
            for (lead_id, _, _), d in zip(items, reply, strict=True)
        }

    async def durable(self) -> None:
        """Redis replicates asynchronously: a master that dies loses the writes its replica
        had not received. The worker calls this before it commits a batch's offsets: on every
        master, a write then ``WAIT`` on the same connection. The replication stream is in
        order, so a replica that has this write has every earlier one (the batch's too)."""
        n = self._wait_replicas
        if n <= 0:
            return
        if not self._per_slot:
            async with self._client.client() as conn:
                acked = await self._wait_on(conn.execute_command, "ls:wait")
            if acked < n:
                raise FeatureStoreUnavailableError(
                    f"{acked} of {n} Redis replicas acknowledged the batch's writes within "
                    f"{self._wait_timeout_ms} ms"
                )
            return
        targets = self._wait_targets()
        results = await asyncio.gather(
            *(self._wait_node(node, key) for node, key in targets), return_exceptions=True
        )
        for (node, _), res in zip(targets, results, strict=True):
            if isinstance(res, BaseException) or res < n:
                raise FeatureStoreUnavailableError(
                    f"Redis master {node.name}: {res!r} of {n} replicas acknowledged the "
                    f"batch's writes within {self._wait_timeout_ms} ms"
                ) from (res if isinstance(res, BaseException) else None)

    async def _wait_on(self, execute: Callable[..., Awaitable[Any]], key: str) -> int:
        await execute("SET", key, "1", "PX", 60_000)
        return int(await execute("WAIT", self._wait_replicas, self._wait_timeout_ms))

    async def _wait_node(self, node: Any, key: str) -> int:
        conn = node.acquire_connection()
        try:

            async def execute(*args: Any) -> Any:
                await conn.send_command(*args)
                return await conn.read_response()

            return await self._wait_on(execute, key)
        finally:
            node.release(conn)

    def _wait_targets(self) -> list[tuple[Any, str]]:
        """Each master of the cluster now, with a key of a slot it serves."""
        cluster: Any = self._client  # a RedisCluster when per_slot
        keys: dict[str, tuple[Any, str]] = {}
        masters = {node.name for node in cluster.get_primaries()}
        for i in range(65_536):
            key = f"ls:{{w{i}}}:wait"
            node = cluster.get_node_from_key(key)
            keys.setdefault(node.name, (node, key))
            if masters <= keys.keys():
                break
        return [keys[name] for name in sorted(masters) if name in keys]

    async def latest_score(self, lead_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(lead_keys(lead_id).latest)
        return None if raw is None else orjson.loads(raw)

    async def erase(self, lead_ids: Sequence[str], suppress_s: int, now_ms: int) -> dict[str, int]:
        return await self._erase_call(lead_ids, "e", suppress_s, now_ms)

    async def sweep(self, lead_ids: Sequence[str]) -> dict[str, int]:
        return await self._erase_call(lead_ids, "s", 1, 0)

    async def _erase_call(
        self, lead_ids: Sequence[str], mode: str, suppress_s: int, now_ms: int
    ) -> dict[str, int]:
        leads = list(dict.fromkeys(lead_ids))
        if not leads:
            return {}
        groups: dict[int | None, list[str]] = {}
        for lead in leads:
            groups.setdefault(lead_slot(lead) if self._per_slot else None, []).append(lead)
        script = self._client.register_script(_ERASE_LUA)
        args: list[Any] = [erased_state(now_ms), max(1, int(suppress_s)), mode, now_ms]
        out: dict[str, int] = {}
        for group in groups.values():
            keys: list[str] = []
            for lead in group:
                k = lead_keys(lead)
                keys += [k.state, k.ids, k.latest, k.pending, k.announced, erased_key(lead)]
            backoff = Backoff(self._max_backoff_s, self._retry_for_s)
            while True:
                try:
                    counts = await script(keys=keys, args=args)
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    await backoff.wait(exc)
            out.update(zip(group, (int(n) for n in counts), strict=True))
        return out


async def erased_leads(client: aioredis.Redis, lead_ids: Sequence[str]) -> set[str]:
    """The leads among ``lead_ids`` under an erasure's suppression (one pipelined round of
    EXISTS; on a cluster redis-py splits it by node)."""
    leads = list(dict.fromkeys(lead_ids))
    if not leads:
        return set()
    pipe = client.pipeline(transaction=False)
    for lead in leads:
        pipe.exists(erased_key(lead))
    found = await pipe.execute()
    return {lead for lead, n in zip(leads, found, strict=True) if n}


async def apply_in_batches(
    store: FeatureStore, events: Sequence[Event], batch: int = 500
) -> list[Update]:
    """Apply ``events`` in batches as the worker does: each call confirms the previous batch's
    applied events (as if their scores had been delivered); a final call confirms the last."""
    updates: list[Update] = []
    confirm: list[Confirmation] = []
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        done = await store.apply_batch(chunk, confirm)
        confirm = [
            (e.lead_id, e.event_id) for e, u in zip(chunk, done, strict=True) if u.outcome == "ok"
        ]
        updates += done
    if confirm:
        await store.apply_batch([], confirm)
    return updates
