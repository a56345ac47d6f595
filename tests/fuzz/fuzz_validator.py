"""Coverage-guided fuzzing of the event validator and the DLQ record with atheris.

Run: ``python tests/fuzz/fuzz_validator.py -max_total_time=600`` (any libFuzzer flags).
Each input is tried as raw message bytes, and as a JSON envelope whose fields the fuzzer
fills; the validator must give an event or an error code, never raise, and the DLQ record
must stay within its bounds. A crash is written to ``crash-*`` and makes the exit code 1.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import orjson

    from leadscore.schemas import SOURCES as INPUT_SOURCES
    from leadscore.schemas.validation import (
        DLQ_MAX_VALUE_BYTES,
        ERROR_CODES,
        Event,
        Invalid,
        _validate,
        dlq_record,
    )

NOW = 1_796_000_000_000
DAY = 86_400_000
SOURCES = (*INPUT_SOURCES, None)  # None: a file, any source allowed
FIELDS = ("event_id", "lead_id", "source", "type", "ts", "attributes")


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 3 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {
        fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 3))
    }


def _check(raw: bytes, key: bytes | None, topic: str | None) -> None:
    res = _validate(raw, topic, key, NOW, DAY, True)  # type: ignore[arg-type]
    if not isinstance(res, Event | Invalid):
        raise AssertionError(f"validator returned {res!r}")
    if isinstance(res, Invalid):
        if res.code not in ERROR_CODES:
            raise AssertionError(f"unknown code {res.code}")
        rec = dlq_record(raw, topic="t", partition=0, offset=0, key=key, error=res, now_ms=NOW)
        if len(orjson.dumps(rec)) > 7 * DLQ_MAX_VALUE_BYTES + 20_000:
            raise AssertionError("a DLQ record beyond its bound")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    topic = SOURCES[fdp.ConsumeIntInRange(0, len(SOURCES) - 1)]
    key = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20)) if fdp.ConsumeBool() else None
    if fdp.ConsumeBool():
        _check(fdp.ConsumeBytes(fdp.remaining_bytes()), key, topic)
        return
    envelope: dict[str, object] = {
        "event_id": "e1",
        "lead_id": "L-1",
        "source": topic or "web",
        "type": "page_view",
        "ts": "2026-11-27T11:59:00.250+00:00",
    }
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        envelope[FIELDS[fdp.ConsumeIntInRange(0, len(FIELDS) - 1)]] = _value(fdp)
    try:
        raw = orjson.dumps(envelope)
    except TypeError:  # an integer orjson can't write: the fuzzer's value, not our bug
        return
    _check(raw, key if key is not None else b"L-1", topic)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
