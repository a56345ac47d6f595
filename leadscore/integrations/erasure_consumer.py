"""``leadscore erasure``: the consumer of ``leads.erasure`` (bulk erasure requests).

A request is a JSON object ``{"lead_id": "...", "requested_at": "<RFC 3339>"}`` (the second
optional), keyed by the lead id. Requests are gathered for up to ``batch_wait_s`` (or
``batch`` of them) and erased together by :func:`leadscore.integrations.erase.erase_leads`:
its archive rewrite and its wait for the workers cost per batch, not per lead. Offsets are
committed once a batch is erased and audited, so a crash repeats the batch (erasure is
idempotent; the audit log then holds a second record for the same lead). A request that
isn't one goes to ``leads.dlq`` with the reason, as a bad event does.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer

from leadscore.integrations.erase import erase_leads
from leadscore.schemas.validation import Invalid, dlq_key, dlq_record
from leadscore.settings import Settings

Say = Callable[[str], None]


@dataclass(slots=True)
class ErasureStats:
    requests: int = 0
    erased: int = 0
    invalid: int = 0
    batches: int = 0


def parse_request(raw: bytes | None) -> tuple[str, str | None] | Invalid:
    """``(lead_id, requested_at)`` of a request (``schemas/erasure_request.json``), or why
    it isn't one."""
    if raw is None:
        return Invalid("not_json", "erasure request has no value (null)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", f"erasure request is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Invalid("not_object", "erasure request must be a JSON object")
    lead = obj.get("lead_id")
    if lead is None:
        return Invalid("missing_field", "erasure request needs 'lead_id'")
    if not isinstance(lead, str):
        return Invalid("wrong_type", "lead_id must be a string")
    if not 1 <= len(lead) <= 128:
        return Invalid("invalid_value", "lead_id must be 1..128 characters")
    at = obj.get("requested_at")
    return lead, at if isinstance(at, str) else None


class ErasureConsumer:
    """The consume-gather-erase-commit loop (one per process is enough: requests are rare)."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        batch: int = 500,
        batch_wait_s: float = 5.0,
        say: Say | None = None,
    ) -> None:
        self.settings = settings
        self.batch = batch
        self.batch_wait_s = batch_wait_s
        self.say = say or (lambda _m: None)
        self.stats = ErasureStats()
        self._stop = False
        self.consumer = Consumer(
            {
                **settings.kafka_group_config(group_id or f"{settings.app_id}-erasure"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.producer = Producer(settings.kafka_client_config())

    def stop(self, *_args: object) -> None:
        self._stop = True

    def _gather(self) -> list[Any]:
        msgs: list[Any] = []
        deadline = time.monotonic() + self.batch_wait_s
        while len(msgs) < self.batch and not self._stop:
            left = deadline - time.monotonic()
            if left <= 0 and msgs:
                break
            got = self.consumer.consume(self.batch - len(msgs), timeout=max(min(left, 0.5), 0.05))
            for m in got:
                if m.error():
                    raise KafkaException(m.error())
            msgs += got
            if not msgs:
                return []
        return msgs

    def _handle(self, msgs: list[Any]) -> None:
        leads: dict[str, str | None] = {}
        now_ms = int(time.time() * 1000)
        for m in msgs:
            res = parse_request(m.value())
            if isinstance(res, Invalid):
                rec = dlq_record(
                    m.value(),
                    topic=m.topic(),
                    partition=m.partition(),
                    offset=m.offset(),
                    key=m.key(),
                    error=res,
                    max_value_bytes=self.settings.dlq_max_value_bytes,
                    now_ms=now_ms,
                )
                self.producer.produce(
                    self.settings.topic("dlq"), key=dlq_key(m.key()), value=orjson.dumps(rec)
                )
                self.stats.invalid += 1
                continue
            lead, at = res
            leads.setdefault(lead, at)
        self.stats.requests += len(msgs)
        if leads:
            requested = {lead: at for lead, at in leads.items() if at}
            asyncio.run(
                erase_leads(
                    self.settings,
                    list(leads),
                    requested_by="topic",
                    requested_at=requested,
                    say=self.say,
                )
            )
            self.stats.erased += len(leads)
        if self.producer.flush(30.0) != 0:
            raise KafkaException("the DLQ records of invalid erasure requests were not delivered")
        self.consumer.commit(asynchronous=False)
        self.stats.batches += 1
        self.say(
            f"erased {self.stats.erased} leads from {self.stats.requests} requests "
            f"({self.stats.invalid} invalid, sent to the DLQ)"
        )

    def run(
        self, *, max_requests: int | None = None, idle_exit_s: float | None = None
    ) -> ErasureStats:
        """Consume until stopped (SIGINT/SIGTERM), ``max_requests`` handled, or no request
        for ``idle_exit_s`` seconds once partitions were assigned."""
        assigned: list[float] = []

        def on_assign(_c: Any, _parts: Any) -> None:
            if not assigned:
                assigned.append(time.monotonic())

        topic = self.settings.topic("erasure")
        self.consumer.subscribe([topic], on_assign=on_assign)
        self.say(f"erasing the leads requested on {topic}")
        last: float | None = None
        try:
            while not self._stop:
                if max_requests is not None and self.stats.requests >= max_requests:
                    break
                msgs = self._gather()
                if msgs:
                    self._handle(msgs)
                    last = time.monotonic()
                elif idle_exit_s is not None and assigned:
                    since = last if last is not None else assigned[0]
                    if time.monotonic() - since > idle_exit_s:
                        break
        finally:
            self.consumer.close()
        return self.stats


def run_erasure(settings: Settings, **kwargs: Any) -> ErasureStats:
    """``leadscore erasure``: run until SIGINT/SIGTERM (or the limits in ``kwargs``)."""
    limits = {k: kwargs.pop(k) for k in ("max_requests", "idle_exit_s") if k in kwargs}
    worker = ErasureConsumer(settings, **kwargs)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, worker.stop)
    return worker.run(**limits)
