"""API keys and per-key rate limits.

Keys are stored only as SHA-256 hashes (``LEADSCORE_API_KEYS`` or the file
``LEADSCORE_API_KEYS_FILE``), one entry per key: ``name=sha256hex`` with optional scopes,
``name=sha256hex:read+score``. A plain hash is enough because keys are random 256-bit tokens
(``leadscore api keygen``), not passwords: nothing to brute-force, so no slow KDF is needed.
A client sends its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Rate limits are a token bucket per key and per replica (no shared state between API
processes): with N replicas behind a balancer a key gets up to N times the rate.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from leadscore.errors import ConfigError

SCOPES = ("read", "score")
"""``read``: GET /leads/... (lead profile data); ``score``: POST /score and /score:batch."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A random key: ``lsk_`` and 43 URL-safe characters (256 bits)."""
    return "lsk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: str
    scopes: frozenset[str]


def parse_entry(entry: str) -> ApiKey:
    """``name=sha256hex[:scope+scope]`` as an :class:`ApiKey`."""
    name, sep, rest = entry.strip().partition("=")
    digest, _, scopes_text = rest.partition(":")
    digest = digest.strip().lower()
    if not sep or not name.strip():
        raise ConfigError(f"API key entry {entry!r}: expected name=sha256hex[:scopes]")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(
            f"API key {name.strip()!r}: the hash must be 64 hex digits (SHA-256 of the key; "
            "`leadscore api keygen` prints both)"
        )
    scopes = frozenset(s.strip() for s in scopes_text.split("+") if s.strip()) or frozenset(SCOPES)
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ConfigError(
            f"API key {name.strip()!r}: unknown scope(s) {sorted(unknown)}; use {SCOPES}"
        )
    return ApiKey(name.strip(), digest, scopes)


def load_keys(inline: str, file: Path | None) -> list[ApiKey]:
    """Keys from the setting (comma-separated) and the file (one per line, # comments)."""
    entries = [e for e in inline.split(",") if e.strip()]
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"LEADSCORE_API_KEYS_FILE: can't read {file}: {exc}") from exc
        lines = [ln.strip() for ln in text.splitlines()]
        entries += [ln for ln in lines if ln and not ln.startswith("#")]
    keys = [parse_entry(e) for e in entries]
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ConfigError("API keys: each key needs a name of its own")
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for k in self.keys:
            # Every entry compared in constant time: the answer's timing tells nothing.
            if hmac.compare_digest(k.digest, digest):
                found = k
        return found


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets per key: ``rate`` requests/s sustained, bursts up to ``burst``."""

    rate: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, name: str, now: float | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it may (``Retry-After``)."""
        if self.rate <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = _Bucket(self.burst, t)
        b.tokens = min(self.burst, b.tokens + (t - b.at) * self.rate)
        b.at = t
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate
