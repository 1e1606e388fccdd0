"""Fuzzing every Kafka contract: whatever bytes arrive on a topic, `parse` returns a valid message or
raises InvalidMessage naming why, never anything else; mutated samples that still parse are valid.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.registry import InvalidMessage, parse, serialize
from schemas.topics import Topic
from tests.support.samples import samples

pytestmark = pytest.mark.unit
SAMPLES = [(topic, json.loads(serialize(message))) for topic, messages in samples().items() for message in messages]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
_ODD: st.SearchStrategy[object] = st.sampled_from(
    [-1, -(10**15), 10**30, 0.5, "12", None, "", "XXX", "usd", [], {}, True, "x" * 5000]
)


def _parses_or_says_why(topic: Topic, raw: bytes | str) -> None:
    refusal: InvalidMessage | None = None
    try:
        message = parse(topic, raw)
    except InvalidMessage as error:
        refusal = error
    if refusal is not None:
        assert str(refusal).startswith(f"invalid {topic.value} message")
        assert refusal.errors
    else:
        assert parse(topic, serialize(message)) == message  # what parsed is valid, and stable on the wire


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(list(Topic)), raw=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_parse_or_are_refused_with_a_reason(topic: Topic, raw: bytes | str) -> None:
    """Garbage, truncated or non-UTF-8 input: InvalidMessage, never another exception."""
    _parses_or_says_why(topic, raw)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[Topic, Any]:
    topic, body = draw(st.sampled_from(SAMPLES))
    body = json.loads(json.dumps(body))
    for _ in range(draw(st.integers(1, 3))):
        keys = list(body) if isinstance(body, dict) else []
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        how = draw(st.sampled_from(["drop", "odd", "any", "nested"]))
        if how == "drop":
            del body[key]
        elif how == "nested" and isinstance(body[key], dict) and body[key]:
            inner = draw(st.sampled_from(list(body[key])))
            body[key][inner] = draw(_ODD)
        else:
            body[key] = draw(_ODD) if how == "odd" else draw(_JSON)
    return topic, body


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(case=_mutated())
def test_mutated_messages_of_every_contract_parse_or_are_refused(case: tuple[Topic, Any]) -> None:
    """Missing fields, wrong types, huge or negative amounts, unknown currencies, bad ids: refused, said why."""
    topic, body = case
    _parses_or_says_why(topic, json.dumps(body))


_BAD_AMOUNTS = [("amount_minor", -1), ("amount_minor", 10**20), ("currency", "XXX"), ("currency", "usd"),
                ("amount_minor", 1.5), ("amount_minor", "100")]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), _BAD_AMOUNTS)
def test_bad_amounts_are_refused(field: str, value: object) -> None:
    """Money is a non-negative integer of minor units in a known currency: nothing else gets through."""
    topic, body = next((t, b) for t, b in SAMPLES if t == Topic.AUTH_REQUESTS)
    body = json.loads(json.dumps(body))
    body["amount"][field] = value
    with pytest.raises(InvalidMessage):
        parse(topic, json.dumps(body))
