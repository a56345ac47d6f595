"""Script calls on one connection: applied in call order, retried in order after a failure."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest
import redis.asyncio as aioredis

from leadscore.features.ordered import CONNECTION_NAME, OrderedScriptCalls

pytestmark = pytest.mark.integration

# Appends its argument once (a repeat is recognised, as the store's script recognises an
# event it has applied) and returns the list's length after it.
APPEND = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return redis.call('LLEN', KEYS[1])
"""


def _calls(client: aioredis.Redis) -> OrderedScriptCalls:
    sha = hashlib.sha1(APPEND.encode()).hexdigest()  # noqa: S324 - Redis's script id
    return OrderedScriptCalls(client, APPEND, sha, max_backoff_s=0.2)


async def _kill_connection(control: aioredis.Redis) -> None:
    for c in await control.client_list():
        if c.get("name") == CONNECTION_NAME:
            await control.client_kill_filter(_id=c["id"])
            return
    raise AssertionError("no connection named " + CONNECTION_NAME)


async def test_calls_made_without_waiting_are_applied_in_call_order(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    calls = _calls(client)
    keys = [f"t:{uuid.uuid4().hex}:l", f"t:{uuid.uuid4().hex}:s"]
    try:
        lengths = await asyncio.wait_for(
            asyncio.gather(*(calls.call(keys, [str(i)]) for i in range(300))), 10
        )
        assert lengths == list(range(1, 301))
        assert await client.lrange(keys[0], 0, -1) == [str(i).encode() for i in range(300)]
    finally:
        await calls.close()
        await client.delete(*keys)
        await client.aclose()


async def test_a_killed_connection_and_a_flushed_script_cache_are_survived_in_order(
    redis_url, caplog
):
    client = aioredis.Redis.from_url(redis_url)
    calls = _calls(client)
    keys = [f"t:{uuid.uuid4().hex}:l", f"t:{uuid.uuid4().hex}:s"]
    try:
        assert await calls.call(keys, ["a"]) == 1
        first = [asyncio.ensure_future(calls.call(keys, [f"x{i}"])) for i in range(200)]
        await asyncio.sleep(0)
        await _kill_connection(client)
        second = [asyncio.ensure_future(calls.call(keys, [f"y{i}"])) for i in range(50)]
        await asyncio.wait_for(asyncio.gather(*first, *second), 10)
        assert "Redis unavailable" in caplog.text  # the kill was seen and retried
        caplog.clear()
        await client.script_flush()
        assert await asyncio.wait_for(calls.call(keys, ["z"]), 10) == 252
        assert "No matching script" in caplog.text
        expected = ["a", *(f"x{i}" for i in range(200)), *(f"y{i}" for i in range(50)), "z"]
        assert await client.lrange(keys[0], 0, -1) == [e.encode() for e in expected]
    finally:
        await calls.close()
        await client.delete(*keys)
        await client.aclose()
