"""Issue 28: the erasure's pieces that need no broker: requests, the audit's keyed hash, the
archive rewrite, and the refusal to run without a key."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest

from leadscore.errors import ConfigError
from leadscore.features.store import erased_state
from leadscore.infra.archive import ArchivedEvent, ArchiveWriter, erase_from_archive, read_archive
from leadscore.integrations.erase import lead_hash, privacy_key
from leadscore.integrations.erasure_consumer import parse_request
from leadscore.schemas.validation import Invalid, format_ts_ms, validate_event
from leadscore.settings import Settings


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "not_json"),
        (b"{nope", "not_json"),
        (b"[1]", "not_object"),
        (b"{}", "missing_field"),
        (b'{"lead_id": 7}', "wrong_type"),
        (b'{"lead_id": ""}', "invalid_value"),
    ],
)
def test_a_request_that_isnt_one_says_why(raw, code):
    res = parse_request(raw)
    assert isinstance(res, Invalid) and res.code == code


def test_a_request_gives_the_lead_and_when_it_was_asked():
    assert parse_request(b'{"lead_id": "L-1", "requested_at": "2026-12-01T00:00:00Z"}') == (
        "L-1",
        "2026-12-01T00:00:00Z",
    )
    assert parse_request(b'{"lead_id": "L-1"}') == ("L-1", None)


def test_the_audit_names_a_lead_by_hmac_and_erasure_needs_the_key():
    key = privacy_key(Settings(privacy_key="k" * 32))
    assert lead_hash(key, "L-1") == hmac.new(key, b"L-1", hashlib.sha256).hexdigest()
    assert lead_hash(key, "L-1") != lead_hash(b"x" * 32, "L-1")
    with pytest.raises(ConfigError, match="LEADSCORE_PRIVACY_KEY"):
        privacy_key(Settings())
    # An empty variable (compose's ${VAR:-}) is no key, not a too-short one.
    assert Settings(privacy_key="").privacy_key is None


def test_the_erased_state_is_msgpack_of_x_alone():
    # fixmap of 1, fixstr "x", int 64 big-endian: what cmsgpack unpacks to {x = ms}.
    ms = 1_800_000_000_123
    assert erased_state(ms) == b"\x81\xa1x\xd3" + ms.to_bytes(8, "big", signed=True)


def _parse(raw: bytes):
    return validate_event(
        raw, topic_source=None, key=None, now_ms=2**62, max_future_ms=0, check_key=False
    )


def _event(i: int, lead: str) -> ArchivedEvent:
    body = {
        "event_id": f"e{i}",
        "lead_id": lead,
        "source": "web",
        "type": "page_view",
        "ts": format_ts_ms(1_796_515_200_000 + i * 3_600_000),
        "attributes": {},
    }
    raw = orjson.dumps(body)
    ev = validate_event(
        raw, topic_source="web", key=None, now_ms=2**62, max_future_ms=0, check_key=False
    )
    assert not isinstance(ev, Invalid)
    return ArchivedEvent(ev, raw, "leads.web", 0, i)


def test_the_archive_is_rewritten_without_the_erased_leads(tmp_path: Path):
    pytest.importorskip("pyarrow")
    writer = ArchiveWriter(str(tmp_path))
    # Two files hold lead A among others, one only lead B, one neither.
    writer.write([_event(0, "A"), _event(1, "C")], 0)
    writer.write([_event(30, "B"), _event(31, "B")], 0)
    writer.write([_event(60, "A"), _event(61, "D")], 0)
    writer.write([_event(90, "D")], 0)
    before = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    res = erase_from_archive(str(tmp_path), ["A", "B", "Z"])
    assert res.removed == {"A": 2, "B": 2, "Z": 0}
    assert (res.files_rewritten, res.files_deleted) == (2, 1)
    assert res.files_scanned == len(before)

    def parse(raw: bytes):
        return validate_event(
            raw, topic_source=None, key=None, now_ms=2**62, max_future_ms=0, check_key=False
        )

    left = [ev.lead_id for *_, ev in read_archive(str(tmp_path), parse=parse)]
    assert sorted(left) == ["C", "D", "D"]
    assert not list(tmp_path.rglob(".*.tmp"))
    # Idempotent.
    again = erase_from_archive(str(tmp_path), ["A", "B"])
    assert again.removed == {"A": 0, "B": 0} and again.files_rewritten == 0
