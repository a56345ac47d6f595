"""API keys, scopes and rate limits (pure logic; the served API is tested in integration)."""

from __future__ import annotations

import pytest

from leadscore.api.auth import KeyRing, RateLimiter, hash_key, is_loopback, load_keys, new_key
from leadscore.cli import main
from leadscore.errors import ConfigError


def test_keys_are_found_by_hash_with_their_scopes(tmp_path):
    a, b = new_key(), new_key()
    assert a != b and a.startswith("lsk_") and len(a) > 40
    f = tmp_path / "keys"
    f.write_text(f"# CRM team\nreader={hash_key(b)}:read\n\n")
    ring = KeyRing(load_keys(f"crm={hash_key(a)}", f))
    found = ring.find(a)
    assert found is not None and found.name == "crm" and found.scopes == {"read", "score"}
    reader = ring.find(b)
    assert reader is not None and reader.scopes == {"read"}
    assert ring.find("lsk_guess") is None
    assert not KeyRing([]).enabled


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("nohash", "name=sha256hex"),
        ("x=abc", "64 hex digits"),
        (f"x={'0' * 64}:admin", "unknown scope"),
        (f"x={'0' * 64},x={'1' * 64}", "a name of its own"),
    ],
)
def test_bad_key_entries_say_what_is_wrong(entry, says):
    with pytest.raises(ConfigError, match=says):
        load_keys(entry, None)


def test_rate_limiter_allows_a_burst_then_the_rate():
    lim = RateLimiter(rate=2.0, burst=3.0)
    assert [lim.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take("k", now=0.0) == pytest.approx(0.5)
    assert lim.take("other", now=0.0) == 0.0  # per key
    assert lim.take("k", now=0.5) == 0.0  # one token back after 1/rate
    assert RateLimiter(rate=0.0, burst=1.0).take("k") == 0.0  # off


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")  # noqa: S104


def test_keygen_prints_a_key_and_an_entry_that_loads(capsys):
    assert main(["api", "keygen", "crm", "--scopes", "score", "--json"]) == 0
    import orjson

    out = orjson.loads(capsys.readouterr().out)
    [key] = load_keys(out["entry"], None)
    assert key.name == "crm" and key.scopes == {"score"}
    assert KeyRing([key]).find(out["key"]) == key
