"""No raw PII at rest: personal data in events is dropped or pseudonymised before it is kept.

A :class:`Redactor` applies one policy to an event's ``attributes`` (and, for the DLQ and the
archive, to a whole message), at validation, before anything is stored or published:

* an attribute whose **name** is on the list (``LEADSCORE_PII_ATTRIBUTES``; compared without
  case and without separators, so ``first_name``, ``firstName`` and ``First Name`` are one
  name) is dropped, or its value replaced by a keyed hash, at any depth;
* every **string** (attribute values, inside lists and nested objects, and object keys) has
  the parts that match a pattern (``LEADSCORE_PII_PATTERNS``: e-mail addresses, phone
  numbers, IPv4 and IPv6 addresses by default) replaced by the keyed hash of the match, or by
  ``[redacted]``.

The keyed hash is HMAC-SHA256 with ``LEADSCORE_PRIVACY_KEY``, ``hmac:`` and the first 24 hex
digits (96 bits): the same value gives the same pseudonym under one key, so a model or an
analyst can still count distinct values, but nobody without the key can test a guess (an
unkeyed hash of an e-mail address is reversed by hashing candidate addresses). Without a key
the action can only be ``drop``.

Redacting twice changes nothing: a pseudonym or ``[redacted]`` never matches the built-in
patterns, a pseudonym under a listed name is kept as it is, and text is redacted until
nothing in it matches. So the archive, which keeps redacted messages, reads back into the
same events however often they are validated again.

The phone pattern is written not to take what the features read: ranges such as
``1001-5000`` (``company_size``), dates and RFC 3339 timestamps, ids such as ``L-000123``,
``ws-0123456789ab`` or UUIDs, version numbers after a slash (user agents), decimals. It does
take any run of 7 to 15 digits standing alone, since ``4155550123`` is a phone number: an
order number or epoch time in a string attribute is pseudonymised too.

>>> r = Redactor.build(attributes=["email"], patterns=DEFAULT_PII_PATTERNS, key=b"k" * 32)
>>> out = r.redact_value({"Email": "jane@example.com", "note": "call +1 415-555-0123",
...                       "company_size": "1001-5000", "url": "/pricing"})
>>> out["Email"] == r.token("jane@example.com"), out["note"].startswith("call hmac:")
(True, True)
>>> out["company_size"], out["url"]
('1001-5000', '/pricing')
>>> Redactor.build(attributes=["email"], patterns=[], key=None).redact_value({"email": "x"})
{}
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from leadscore.errors import LeadscoreError
from leadscore.schemas import EVENT_TYPES, SOURCES, load_schema

PiiAction = Literal["hmac", "drop"]

#: A pseudonym is ``hmac:`` and this many hex digits of HMAC-SHA256 (96 bits: no two of a
#: billion distinct values are likely to share one).
HMAC_PREFIX = "hmac:"
HMAC_HEX_CHARS = 24
#: What a pattern's match becomes when the action is ``drop``.
DROPPED = "[redacted]"
_TOKEN = re.compile(rf"{HMAC_PREFIX}[0-9a-f]{{{HMAC_HEX_CHARS}}}")

DEFAULT_PII_ATTRIBUTES: tuple[str, ...] = (
    "email",
    "email_address",
    "phone",
    "phone_number",
    "mobile",
    "mobile_phone",
    "cell_phone",
    "telephone",
    "fax",
    "name",
    "first_name",
    "last_name",
    "full_name",
    "contact_name",
    "ip",
    "ip_address",
    "street",
    "street_address",
    "address_line1",
    "address_line2",
)

# Not starting with a quote: "'jane@example.com'" (a repr in an error message) keeps its quotes.
_EMAIL = r"(?<![\w.%+\-])[\w%+\-][\w.%+'\-]*(?:@|%40)[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{2,}"
# Each alternative is a common way of writing a number: +CC and groups, an area code in
# parentheses, three to five groups, a trunk prefix 0 and one group, or digits alone. Two
# groups without a 0 or + in front are a range (company_size 1001-5000), not a number.
_PHONE = r"""(?x:
(?<![\w+])(?<!\w[.\-/])                     # not inside a word, an id (L-000123) or a path
(?!(?:\d{4}[./\-]\d{1,2}[./\-]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-]\d{4})(?![.\-]?\d))  # a date
(?=[+(]?(?:[ .\-()]{0,2}\d){7})             # at least 7 digits
(?:
    \+\d{1,3}(?:[ .\-]{0,2}\(?\d{1,4}\)?){2,6}
  | \(\d{2,5}\)[ .\-]{0,2}\d{2,5}(?:[ .\-]\d{2,5}){0,3}
  | \d{2,5}(?:[ .\-]\d{2,5}){1,3}[ .\-]\d{2,10}
  | 0\d{1,4}[ \-]\d{4,10}
  | \d{7,15}
)
(?!\w|[.\-/:]\w)                            # nor followed by more of one
)"""
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not after "word/": "Chrome/120.0.0.0" is a version.
_IPV4 = rf"(?<![\w.])(?<!\w/)(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)"
_HEX = "[0-9A-Fa-f]"
# Hex groups and colons with a "::" or eight groups (times and MAC addresses have neither),
# not starting inside one ("src:2001:db8::1" takes "c:" along: a valid address too).
_IPV6 = (
    rf"(?<![0-9A-Fa-f:])(?=[0-9A-Fa-f:.]*::|(?:{_HEX}{{1,4}}:){{7}}{_HEX})(?=:*{_HEX})"
    rf"(?:{_HEX}{{0,4}}:){{2,7}}(?:(?:\d{{1,3}}\.){{3}}\d{{1,3}}|{_HEX}{{0,4}})(?![\w:])"
)

#: The built-in patterns, named ``builtin:NAME`` in ``LEADSCORE_PII_PATTERNS``.
BUILTIN_PATTERNS: dict[str, str] = {"email": _EMAIL, "ipv4": _IPV4, "ipv6": _IPV6, "phone": _PHONE}
BUILTIN_PREFIX = "builtin:"
DEFAULT_PII_PATTERNS: tuple[str, ...] = tuple(BUILTIN_PREFIX + n for n in BUILTIN_PATTERNS)

#: Envelope fields kept as they are in a whole message: the ids identify the message and the
#: lead (they are keys, not content); source, type and ts only when they hold a value the
#: schema accepts, which no pattern may alter (anything else in them is redacted).
_ENVELOPE_IDS = frozenset({"event_id", "lead_id"})
_ENVELOPE_VALUES: dict[str, Callable[[str], object]] = {
    "source": frozenset(SOURCES).__contains__,
    "type": frozenset(t for types in EVENT_TYPES.values() for t in types).__contains__,
    "ts": re.compile(load_schema("event.web")["properties"]["ts"]["pattern"]).fullmatch,
}


class PrivacyConfigError(LeadscoreError, ValueError):
    """Raised when a PII pattern is not a usable regular expression, or the action is
    ``hmac`` without a key."""


@functools.lru_cache(maxsize=8192)
def normalize_name(name: str) -> str:
    """An attribute name as the name list is matched: lower case, letters and digits only.

    >>> normalize_name("First Name"), normalize_name("e-mail"), normalize_name("ipAddress")
    ('firstname', 'email', 'ipaddress')
    """
    return "".join(c for c in name.casefold() if c.isalnum())


def expand_patterns(patterns: Iterable[str]) -> list[str]:
    """The regular expressions ``patterns`` name (``builtin:NAME`` or a regex itself)."""
    out = []
    for p in patterns:
        if p.startswith(BUILTIN_PREFIX):
            name = p[len(BUILTIN_PREFIX) :]
            if name not in BUILTIN_PATTERNS:
                raise PrivacyConfigError(
                    f"{p!r} is not a built-in pattern (there are "
                    f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_PATTERNS)})"
                )
            out.append(BUILTIN_PATTERNS[name])
        else:
            out.append(p)
    return out


_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _scoped(regex: str) -> str:
    """``regex`` as a group of an alternation: Python refuses global flags such as ``(?i)``
    other than at the very start, so a leading ``(?i)`` becomes ``(?i:...)``."""
    m = _GLOBAL_FLAGS.match(regex)
    if m is None:
        return f"(?:{regex})"
    end = "\n)" if "x" in m.group(1) else ")"  # a trailing comment must not eat the ")"
    return f"(?{m.group(1)}:{regex[m.end() :]}{end}"


def compile_patterns(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``patterns`` (None for none); raises
    :class:`PrivacyConfigError` naming the first that is not a regex or matches the empty
    string (it would match between any two characters)."""
    regexes = expand_patterns(patterns)
    for i, (given, regex) in enumerate(zip(patterns, regexes, strict=True), start=1):
        try:
            compiled = re.compile(_scoped(regex))
        except re.error as exc:
            raise PrivacyConfigError(
                f"pattern {i} ({given!r}) is not a valid regular expression: {exc}"
            ) from exc
        if compiled.fullmatch(""):
            raise PrivacyConfigError(f"pattern {i} ({given!r}) matches the empty string")
    if not regexes:
        return None
    return re.compile("|".join(_scoped(r) for r in regexes))


_DIGIT = re.compile(r"\d")
_KEY_CACHE = 4096
#: Passes of ``redact_text`` at most (each replaces what the one before it left matching;
#: text that needs more than two is contrived).
_MAX_PASSES = 8
#: Objects and arrays nested deeper than this are replaced whole: no event needs them, and
#: the bound keeps redaction (recursive) within the stack and orjson's 255 levels.
MAX_DEPTH = 32


def _may_match_a_builtin(s: str) -> bool:
    """False only for a string no built-in pattern can match: each needs a digit, an "@"
    (``%40`` has digits), or an IPv6 address's "::" or seven colons. A scan for these costs
    a fraction of the patterns' own, and most strings (names of pages, campaigns, countries)
    have none of them."""
    return "@" in s or "::" in s or _DIGIT.search(s) is not None or s.count(":") >= 7


def _screen(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """The cheap test strings pass before the regex scan, when all patterns are built-in."""
    names = {BUILTIN_PREFIX + n for n in BUILTIN_PATTERNS}
    return _may_match_a_builtin if all(p in names for p in patterns) else None


@dataclass(frozen=True, slots=True)
class Redactor:
    """One redaction policy (see the module's docstring); build it once with :meth:`build`.

    Every ``redact_*`` method returns its argument itself when there was nothing to redact,
    so the common case costs no copies."""

    names: frozenset[str]
    """Normalized attribute names (:func:`normalize_name`)."""
    pattern: re.Pattern[str] | None
    action: PiiAction
    key: bytes | None = field(default=None, repr=False)
    screen: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)
    _keys: dict[str, tuple[str, bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Per object key seen: the key redacted, and whether it is a listed name (an event's
    keys repeat from event to event; the cache is emptied when it grows large)."""

    def __post_init__(self) -> None:
        if self.action == "hmac" and not self.key:
            raise PrivacyConfigError("the hmac action needs a key (LEADSCORE_PRIVACY_KEY)")

    @classmethod
    def build(
        cls,
        *,
        attributes: Iterable[str],
        patterns: Sequence[str],
        key: bytes | None,
        action: PiiAction | None = None,
    ) -> Redactor:
        """The policy of these settings' values; ``action`` None: ``hmac`` with a key, else
        ``drop``."""
        return cls(
            names=frozenset(normalize_name(a) for a in attributes if normalize_name(a)),
            pattern=compile_patterns(patterns),
            action=action or ("hmac" if key else "drop"),
            key=key or None,
            screen=_screen(patterns),
        )

    @property
    def active(self) -> bool:
        """Whether this policy redacts anything at all."""
        return bool(self.names) or self.pattern is not None

    def token(self, value: Any) -> str:
        """The pseudonym of ``value``: a string with surrounding blanks and case ignored (one
        person's ``Jane@Example.com `` is ``jane@example.com``), anything else as JSON."""
        if self.key is None:
            raise PrivacyConfigError("pseudonyms need a key (LEADSCORE_PRIVACY_KEY)")
        if isinstance(value, str):
            data = value.strip().casefold().encode("utf-8")
        else:  # the stdlib's writer: a Python int may exceed the 64 bits orjson takes
            data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
        digest = hmac.new(self.key, data, hashlib.sha256).hexdigest()
        return HMAC_PREFIX + digest[:HMAC_HEX_CHARS]

    def _replace(self, match: re.Match[str]) -> str:
        return DROPPED if self.action == "drop" else self.token(match.group(0))

    def redact_text(self, text: str) -> str:
        """``text`` with every match of the patterns replaced.

        Replaced again until nothing more matches: the patterns look at what surrounds a
        match, and a replacement changes that (two addresses written together leave
        ``hmac:...@example.com`` after one pass), so one pass could leave a match for the
        next reader, and redacting the result again would change it."""
        if self.pattern is None or (self.screen is not None and not self.screen(text)):
            return text
        for _ in range(_MAX_PASSES):
            done = self.pattern.sub(self._replace, text)
            if done == text:
                break
            text = done
        return text

    def redact_value(self, value: Any, depth: int = 0) -> Any:
        """Any JSON value with its strings redacted; in objects, listed names too. An object
        or array nested deeper than ``MAX_DEPTH`` is replaced whole by ``[redacted]``."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            return DROPPED
        if isinstance(value, dict):
            return self._redact_object(value, {}, depth)
        if isinstance(value, list):
            items = [self.redact_value(v, depth + 1) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value

    def _redact_object(
        self, obj: dict[str, Any], keep: dict[str, Callable[[Any], bool]], depth: int
    ) -> dict[str, Any]:
        """``obj`` redacted; a field in ``keep`` whose value passes its test stays as it is."""
        out: dict[str, Any] = {}
        changed = False
        for k, v in obj.items():
            test = keep.get(k)
            if test is not None and test(v):
                out[k] = v
                continue
            key, listed = self._key(k)
            if listed:
                new = self._redact_listed(v)
                if new is _DROP:
                    changed = True
                    continue
            else:
                new = self.redact_value(v, depth + 1)
            changed = changed or new is not v or key is not k
            out[key] = new
        return out if changed else obj

    def _key(self, k: str) -> tuple[str, bool]:
        seen = self._keys.get(k)
        if seen is None:
            if len(self._keys) >= _KEY_CACHE:
                self._keys.clear()
            seen = self._keys[k] = (self.redact_text(k), normalize_name(k) in self.names)
        return seen

    def _redact_listed(self, value: Any) -> Any:
        """The value of a listed attribute: None and booleans say nothing about a person."""
        if value is None or isinstance(value, bool):
            return value
        if self.action == "drop":
            return _DROP
        if isinstance(value, str) and _TOKEN.fullmatch(value):
            return value  # already a pseudonym: redacting again changes nothing
        return self.token(value)

    def redact_envelope(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A whole decoded message: ``attributes`` and any other field, except the envelope
        fields holding what the schema allows (event_id and lead_id: any string)."""
        return self._redact_object(obj, _KEEP_ENVELOPE, 0)

    def redact_message(self, raw: bytes) -> bytes | None:
        """The message ``raw`` redacted and serialized again; None if it isn't a JSON object.

        Always serialized again, even with nothing to redact: the parser keeps the last of
        two equal keys, and the bytes as sent would still hold the first."""
        obj = json_object(raw)
        if obj is None:
            return None
        try:
            return orjson.dumps(self.redact_envelope(obj))
        except orjson.JSONEncodeError:  # an integer beyond 64 bits read as a Python int
            return None


def json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` decoded, if it is a JSON object; else None."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


_DROP: Any = object()
"""``_redact_listed``'s answer for an attribute to leave out."""


def _is_string(v: Any) -> bool:
    return isinstance(v, str)


def _passes(test: Callable[[str], object]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and bool(test(v))


_KEEP_ENVELOPE: dict[str, Callable[[Any], bool]] = {
    **{name: _is_string for name in _ENVELOPE_IDS},
    **{name: _passes(test) for name, test in _ENVELOPE_VALUES.items()},
}
