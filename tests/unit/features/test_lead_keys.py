"""Lead keys: one hash tag per lead, one-to-one, inside one cluster slot; state markers."""

from __future__ import annotations

import hashlib
import re

from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from leadscore.features.state import N_SLOTS, marker_key, slot_tags
from leadscore.features.store import hash_tag, lead_keys, lead_slot


def test_the_aliasing_pair_of_the_old_digest_scheme_gets_distinct_keys() -> None:
    evil = "{evil}"
    alias = "#" + hashlib.sha256(evil.encode()).hexdigest()[:24]
    assert hash_tag(evil) != hash_tag(alias)
    assert set(lead_keys(evil)).isdisjoint(lead_keys(alias))


@given(st.text(min_size=1, max_size=128), st.text(min_size=1, max_size=128))
def test_distinct_ids_never_share_a_tag(a: str, b: str) -> None:
    assert (hash_tag(a) == hash_tag(b)) == (a == b)


@given(st.text(alphabet=st.sampled_from("{}%7BDdab25"), min_size=1, max_size=12))
def test_ids_made_of_braces_and_escapes_stay_one_to_one_and_in_one_slot(lead: str) -> None:
    tag = hash_tag(lead)
    # Exactly one brace pair, around the whole tag: Redis hashes all of it.
    assert tag.count("{") == 1 and tag.count("}") == 1 and tag[0] == "{" and tag[-1] == "}"
    codes = {"%25": "%", "%7B": "{", "%7D": "}"}
    assert re.sub("%25|%7B|%7D", lambda m: codes[m.group()], tag[1:-1]) == lead
    slots = {key_slot(k.encode()) for k in lead_keys(lead)}
    assert slots == {lead_slot(lead)}


def test_every_cluster_slot_has_a_marker_in_it() -> None:
    tags = slot_tags()
    assert len(tags) == N_SLOTS
    for slot in (0, 1, 777, N_SLOTS - 1):
        assert key_slot(marker_key(slot).encode()) == slot
    assert marker_key(None) == "ls:marker"
