"""Enrichment files: a provider's CSV or Parquet export as ``leads.enrichment`` events.

Providers (firmographics, technographics, intent data) deliver files, not streams.
``leadscore enrich FILE`` reads one and produces, per row, a ``firmographics``, a
``technographics`` and an ``intent`` event as far as the row has values for them, keyed by
``lead_id``.

Each event's id is a hash of what it says (lead, type, time, attributes): the same file sent
twice gives the same ids, which the feature store drops as duplicates, so a run that failed
halfway is simply run again. Every event is validated as the worker will validate it (the
schema, a time not ahead of the clock, the PII policy); a row with an event that would fail
is reported by its line (CSV) or row (Parquet) and none of its events is sent.

>>> make_event("L-1", "intent", "2026-12-01T00:00:00.000Z", {"topic": "CRM", "score": 71})[
...     "event_id"] == make_event("L-1", "intent", "2026-12-01T00:00:00.000Z",
...                               {"score": 71, "topic": "CRM"})["event_id"]
True
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from leadscore.errors import LeadscoreError
from leadscore.infra.producer import EventProducer
from leadscore.infra.topics import ensure_topics
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import Event, format_ts_ms, parse_ts_ms, validate_event
from leadscore.settings import Settings

EventType = Literal["firmographics", "technographics", "intent"]
EVENT_TYPES: tuple[EventType, ...] = ("firmographics", "technographics", "intent")
#: The time of a row: the first of these with a value (a date is midnight UTC).
TIME_COLUMNS = ("observed_at", "date")
FIRMO_COLUMNS = ("employees", "revenue_band", "industry_code")
#: Columns that make events; a file with none of them has nothing to send.
DATA_COLUMNS = (*FIRMO_COLUMNS, "technologies", "intent_topic", "intent_score")
KNOWN_COLUMNS = ("lead_id", *TIME_COLUMNS, *DATA_COLUMNS, "provider")
#: How technologies are separated in one text cell (a comma already separates CSV fields).
TECH_SEPARATORS = re.compile(r"[;|]")
#: Rejections kept in the summary; the count covers them all.
KEPT_REJECTIONS = 100
PROGRESS_EVERY = 1000
#: The schema's bound on ``attributes.provider``.
MAX_PROVIDER_CHARS = 64

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EnrichmentFileError(LeadscoreError):
    """Raised when an enrichment file can't be read or lacks the columns to make events."""


class RowError(ValueError):
    """Raised when a row's value can't be read; the row is rejected with this message."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row not sent: ``where`` is ``line N`` (CSV, the header is line 1) or ``row N``
    (Parquet, counted from 1)."""

    where: str
    reason: str


@dataclass
class EnrichSummary:
    """What a run read and sent (``produced`` stays 0 on a dry run)."""

    file: str
    format: str
    dry_run: bool
    rows: int = 0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    rejected: int = 0
    without_data: int = 0
    produced: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "events": dict(self.events),
            "produced": self.produced,
            "rejected": self.rejected,
            "without_data": self.without_data,
            "ignored_columns": list(self.ignored_columns),
            "rejections": [{"where": r.where, "reason": r.reason} for r in self.rejections],
        }


Row = dict[str, Any]
"""A row's values by known column (lower case); only the file's columns are keys."""


@dataclass(frozen=True)
class Export:
    """An opened export: its format, its columns as named in the file, and a way to read
    its rows as (where, values or the reason the row can't be read)."""

    path: Path
    format: Literal["csv", "parquet"]
    columns: tuple[str, ...]
    used: dict[str, str]
    """Known column (lower case) -> its name in the file."""
    total: int | None
    """Rows in the file if known cheaply (Parquet metadata; a CSV's lines less the header)."""

    @property
    def ignored(self) -> list[str]:
        used = set(self.used.values())
        return [c for c in self.columns if c not in used]

    def rows(self) -> Iterator[tuple[str, Row | str]]:
        if self.format == "csv":
            return _csv_rows(self)
        return _parquet_rows(self)


def open_export(path: Path) -> Export:
    """Open a provider's export by its suffix (``.csv``, ``.parquet``, ``.pq``) and check its
    columns; raises :class:`EnrichmentFileError` saying what is wrong."""
    if not path.exists():
        raise EnrichmentFileError(f"{path} does not exist")
    if not path.is_file():
        raise EnrichmentFileError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _open_csv(path)
    if suffix in (".parquet", ".pq"):
        return _open_parquet(path)
    raise EnrichmentFileError(
        f"can't tell the format of {path} from its name: use a .csv file (comma-separated, "
        "the first line names the columns) or a .parquet / .pq file"
    )


def _used_columns(path: Path, names: list[str]) -> dict[str, str]:
    """Known column -> its name in the file (names match without case); raises when the
    file can't make events."""
    used: dict[str, str] = {}
    for name in names:
        key = name.strip().lower()
        if key in used:
            raise EnrichmentFileError(
                f"{path}: columns {used[key]!r} and {name!r} are the same column (names are "
                "matched without case): keep one"
            )
        if key in KNOWN_COLUMNS:
            used[key] = name
    found = ", ".join(repr(n) for n in names) or "none"
    if "lead_id" not in used:
        raise EnrichmentFileError(f"{path} has no lead_id column (columns found: {found})")
    if not any(c in used for c in TIME_COLUMNS):
        raise EnrichmentFileError(
            f"{path} has no time column: name it observed_at (RFC 3339) or date (YYYY-MM-DD) "
            f"(columns found: {found})"
        )
    if not any(c in used for c in DATA_COLUMNS):
        raise EnrichmentFileError(
            f"{path} has none of the columns events are made of ({', '.join(DATA_COLUMNS)}); "
            f"columns found: {found}"
        )
    return used


def _open_csv(path: Path) -> Export:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
            lines = sum(1 for _ in fh)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EnrichmentFileError(f"can't read {path}: {_why(exc)}") from exc
    if not header:
        raise EnrichmentFileError(f"{path} is empty: its first line must name the columns")
    names = [h.strip() for h in header]
    if len(names) == 1 and re.search(r"[;\t]", names[0]):
        raise EnrichmentFileError(
            f"{path}: the header {header[0]!r} is one column; the file must be comma-separated"
        )
    return Export(path, "csv", tuple(names), _used_columns(path, names), lines)


def _csv_rows(export: Export) -> Iterator[tuple[str, Row | str]]:
    index = {col: export.columns.index(name) for col, name in export.used.items()}
    width = len(export.columns)
    with export.path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            next(reader)
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue  # a blank line, often the last one
                where = f"line {reader.line_num}"
                if len(record) != width:
                    yield where, f"has {len(record)} fields, the header names {width}"
                    continue
                yield where, {col: record[i] for col, i in index.items()}
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise EnrichmentFileError(
                f"can't read {export.path} after line {reader.line_num}: {_why(exc)}"
            ) from exc


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"{exc}; save the file as UTF-8"
    return str(exc)


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise EnrichmentFileError(
            "reading Parquet needs pyarrow: pip install 'leadscore[parquet]' (or export CSV)"
        ) from exc
    return pq


def _open_parquet(path: Path) -> Export:
    pq = _parquet()
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
        total = int(pf.metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise EnrichmentFileError(f"{path} is not a readable Parquet file: {exc}") from exc
    return Export(path, "parquet", tuple(names), _used_columns(path, names), total)


def _parquet_rows(export: Export) -> Iterator[tuple[str, Row | str]]:
    pq = _parquet()
    import pyarrow as pa

    n = 0
    try:
        pf = pq.ParquetFile(export.path)
        names = list(export.used.values())
        for batch in pf.iter_batches(batch_size=10_000, columns=names):
            for record in batch.to_pylist():
                n += 1
                yield f"row {n}", {col: record[name] for col, name in export.used.items()}
    except (OSError, pa.ArrowException) as exc:
        raise EnrichmentFileError(f"can't read {export.path} after row {n}: {exc}") from exc


# --- one row's values --------------------------------------------------------------------


def _present(v: Any) -> bool:
    """Whether a cell has a value: not null, not NaN (pandas' missing number), not blank."""
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    return not (isinstance(v, str) and not v.strip())


def _text(v: Any, col: str) -> str | None:
    if not _present(v):
        return None
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # a code such as an industry code, stored as a number
    raise RowError(f"{col} {v!r} is not text")


def _number(v: Any, col: str, *, whole: bool) -> int | float | None:
    """A number cell; integral values as ``int`` so that 60 and 60.0 make the same event."""
    if not _present(v):
        return None
    x: float | None = None
    if isinstance(v, int | float) and not isinstance(v, bool):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip().replace(",", "").replace("_", "") if whole else v.strip())
        except ValueError:
            x = None
    kind = "a whole number" if whole else "a number"
    if x is None or not math.isfinite(x) or (whole and not x.is_integer()):
        raise RowError(f"{col} {v!r} is not {kind}")
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return int(x) if x.is_integer() else x


def _technologies(v: Any) -> list[str] | None:
    """A list column, or text separated by ``;`` or ``|``. An empty cell or null is no
    technographics at all (a combined export's row may carry only intent: it must not wipe
    the lead's list); the text ``none`` is an empty list (the provider found none)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        if not v.strip():
            return None
        if v.strip().lower() == "none":
            return []
        items: list[Any] = TECH_SEPARATORS.split(v)
    elif isinstance(v, list | tuple):
        items = [t for t in v if t is not None]
    else:
        raise RowError(f"technologies {v!r} is neither a list nor text separated by ; or |")
    if not all(isinstance(t, str) for t in items):
        raise RowError(f"technologies {v!r} holds something other than text")
    return [t.strip() for t in items if t.strip()]


def _ms(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _time_ms(v: Any, col: str) -> int:
    if isinstance(v, datetime):
        # A Parquet timestamp without a zone: UTC, as exports write them.
        return _ms(v if v.tzinfo is not None else v.replace(tzinfo=UTC))
    if isinstance(v, date):
        return _ms(datetime(v.year, v.month, v.day, tzinfo=UTC))
    if isinstance(v, str):
        s = v.strip()
        if _DATE.match(s):
            try:
                return _ms(datetime.fromisoformat(s).replace(tzinfo=UTC))
            except ValueError:
                pass
        else:
            ms = parse_ts_ms(s)
            if ms is not None:
                return ms
    raise RowError(
        f"{col} {v!r} is neither an RFC 3339 time with offset (2026-12-01T09:30:00Z) "
        "nor a date (2026-12-01)"
    )


def _observed_ms(row: Row) -> int:
    for col in TIME_COLUMNS:
        if _present(row.get(col)):
            return _time_ms(row[col], col)
    names = [c for c in TIME_COLUMNS if c in row]
    verb = "is" if len(names) == 1 else "are"
    raise RowError(f"{' and '.join(names)} {verb} empty: every row needs its time")


def make_event(lead_id: str, typ: str, ts: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """An enrichment event whose id is a hash of what it says (attribute order aside)."""
    said = orjson.dumps([lead_id, typ, ts, attributes], option=orjson.OPT_SORT_KEYS)
    return {
        "event_id": "enr-" + hashlib.sha256(said).hexdigest()[:40],
        "lead_id": lead_id,
        "source": "enrichment",
        "type": typ,
        "ts": ts,
        "attributes": attributes,
    }


def row_events(row: Row, *, provider: str | None = None) -> list[dict[str, Any]]:
    """The events a row makes (none when it has no values); raises :class:`RowError` when a
    value can't be read. ``provider`` is for rows without a provider of their own."""
    lead_id = _text(row.get("lead_id"), "lead_id")
    if lead_id is None:
        raise RowError("lead_id is empty")
    ts = format_ts_ms(_observed_ms(row))
    by = _text(row.get("provider"), "provider") or provider
    common: dict[str, Any] = {"provider": by} if by else {}
    out = []
    firmo: dict[str, Any] = {}
    employees = _number(row.get("employees"), "employees", whole=True)
    if employees is not None:
        firmo["employees"] = employees
    for col in ("revenue_band", "industry_code"):
        value = _text(row.get(col), col)
        if value is not None:
            firmo[col] = value
    if firmo:
        out.append(make_event(lead_id, "firmographics", ts, {**firmo, **common}))
    techs = _technologies(row["technologies"]) if "technologies" in row else None
    if techs is not None:
        out.append(make_event(lead_id, "technographics", ts, {"technologies": techs, **common}))
    topic = _text(row.get("intent_topic"), "intent_topic")
    score = _number(row.get("intent_score"), "intent_score", whole=False)
    if topic is not None:
        if score is None:
            raise RowError(f"intent_topic {topic!r} has no intent_score (0-100)")
        out.append(make_event(lead_id, "intent", ts, {"topic": topic, "score": score, **common}))
    elif score is not None:
        raise RowError(f"intent_score {score!r} has no intent_topic")
    return out


# --- a whole file --------------------------------------------------------------------------


@dataclass
class Checker:
    """Validates events as the worker will: its schema, clock skew and PII policy."""

    now_ms: int
    max_future_ms: int
    redactor: Redactor | None

    def problem(self, event: dict[str, Any]) -> str | None:
        res = validate_event(
            orjson.dumps(event),
            topic_source="enrichment",
            key=str(event["lead_id"]).encode(),
            now_ms=self.now_ms,
            max_future_ms=self.max_future_ms,
            redactor=self.redactor,
        )
        return None if isinstance(res, Event) else f"{event['type']}: {res.message}"


def valid_events(
    export: Export,
    summary: EnrichSummary,
    checker: Checker,
    *,
    provider: str | None = None,
    on_reject: Callable[[Rejection], None] | None = None,
    counted: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of ``export``'s rows that pass ``checker``, counted in ``summary``; a row
    with any event that doesn't is rejected whole."""
    for where, row in export.rows():
        summary.rows += 1
        if counted is not None and summary.rows % PROGRESS_EVERY == 0:
            counted(summary.rows)
        try:
            if isinstance(row, str):
                raise RowError(row)
            events = row_events(row, provider=provider)
            for ev in events:
                problem = checker.problem(ev)
                if problem is not None:
                    raise RowError(problem)
        except RowError as exc:
            rejection = Rejection(where, str(exc))
            summary.rejected += 1
            if len(summary.rejections) < KEPT_REJECTIONS:
                summary.rejections.append(rejection)
            if on_reject is not None:
                on_reject(rejection)
            continue
        if not events:
            summary.without_data += 1
        for ev in events:
            summary.events[ev["type"]] += 1
            yield ev
    if counted is not None and summary.rows % PROGRESS_EVERY:
        counted(summary.rows)


def enrich_file(
    settings: Settings,
    path: Path,
    *,
    provider: str | None = None,
    dry_run: bool = False,
    rate: float | None = None,
    on_reject: Callable[[Rejection], None] | None = None,
    counted: Callable[[int], None] | None = None,
    export: Export | None = None,
) -> EnrichSummary:
    """Read an export and produce its valid events to the enrichment topic (``dry_run``:
    validate and count only). Pass ``export`` if it is already open."""
    if provider is not None and not 0 < len(provider) <= MAX_PROVIDER_CHARS:
        raise LeadscoreError(f"--provider must be 1 to {MAX_PROVIDER_CHARS} characters long")
    export = export or open_export(path)
    summary = EnrichSummary(str(path), export.format, dry_run, ignored_columns=export.ignored)
    checker = Checker(
        now_ms=int(time.time() * 1000),
        max_future_ms=settings.max_future_skew_s * 1000,
        redactor=settings.redactor,
    )
    events = valid_events(
        export, summary, checker, provider=provider, on_reject=on_reject, counted=counted
    )
    if dry_run:
        for _ in events:
            pass
        return summary
    settings.require_kafka()
    ensure_topics(settings)
    producer = EventProducer(settings)
    try:
        try:
            producer.send_all(events, rate=rate)
        except LeadscoreError:
            producer.flush()  # the rows read before the error are delivered all the same
            raise
        finally:
            summary.produced = producer.sent
        producer.flush_or_raise()
    except LeadscoreError as exc:
        raise LeadscoreError(f"{exc}; {AGAIN}") from exc
    return summary


AGAIN = (
    "running the same file again is safe: the events already sent keep their ids and the "
    "store drops them as duplicates"
)
