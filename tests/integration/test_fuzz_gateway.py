"""Fuzzing the gateway, running as its real process with the authorizer: every webhook shape with
mutated bodies signed correctly (so parsing is reached), with bad or replayed signatures, and the
management API through schemathesis from its OpenAPI document. Zero crashes: every answer is a
2xx or a 4xx that says why, never a 5xx.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.keys import Scope, create_key_once
from services.gateway.signatures import STRIPE_HEADER, sign_lithic, sign_stripe
from services.gateway.simulator import (
    generic_authorization_request,
    lithic_asa,
    stripe_authorization_request,
    stripe_capture,
)
from services.platform.settings import Settings
from tests.support.infra import free_port
from tests.support.processes import running, service_env
from tests.support.services import GENERIC_SECRET, LITHIC_SECRET, STRIPE_SECRET

pytestmark = pytest.mark.slow
# FUZZ_EXAMPLES=2000 for a longer search than the suite's.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass(frozen=True)
class Stack:
    """The gateway and authorizer processes of this module, and an admin key."""

    url: str
    admin_key: str
    logs: Path

    def tail(self) -> str:
        """The last lines of both processes' logs, for a failure's message."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def stack(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Authorizer and gateway as processes (`python -m`), on the module's database and topics."""
    logs = tmp_path_factory.mktemp("fuzz")
    port, authorizer_health = free_port(), free_port()
    env = service_env(
        module_settings,
        PURSESTRINGS_GATEWAY_PORT=str(port),
        PURSESTRINGS_STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        PURSESTRINGS_LITHIC_WEBHOOK_SECRET=LITHIC_SECRET,
        PURSESTRINGS_GENERIC_WEBHOOK_SECRET=GENERIC_SECRET,
        PURSESTRINGS_AUTH_DEADLINE_MS="500",
        PURSESTRINGS_AUTHORIZER_HEALTH_PORT=str(authorizer_health),
        PURSESTRINGS_LOG_LEVEL="warning",
    )
    url = f"http://127.0.0.1:{port}"
    with (
        running("services.authorizer", env, logs / "authorizer.log", f"http://127.0.0.1:{authorizer_health}/healthz"),
        running("services.gateway", env, logs / "gateway.log", health_url=f"{url}/healthz"),
    ):
        yield Stack(url, asyncio.run(create_key_once(module_settings, Scope.ADMIN, label="fuzz")), logs)


# ───────────────────────────── mutations of valid bodies ─────────────────────────────

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_ODD_VALUES: st.SearchStrategy[object] = st.sampled_from(
    [-1, 0, -(10**12), 10**18, 2**63, 1.5, "100", None, "", "XXX", "usd", "ZZZ", [], {}, True, "9" * 400]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """`valid` with a few fields dropped, retyped, made huge, negative or nonsense, or the whole body replaced."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    body = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["drop", "odd", "any"]))
        if how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_ODD_VALUES) if how == "odd" else draw(_JSON)
    return body


_HEADER_CHARS = st.characters(min_codepoint=33, max_codepoint=126)  # what HTTP lets a header carry


def _stripe(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {STRIPE_HEADER: sign_stripe(body, STRIPE_SECRET, stamp), "Content-Type": "application/json"}


def _lithic(body: bytes) -> dict[str, str]:
    return sign_lithic(body, LITHIC_SECRET, "msg_fuzz", int(time.time())) | {"Content-Type": "application/json"}


def _generic(body: bytes) -> dict[str, str]:
    return {"X-Pursestrings-Signature": sign_stripe(body, GENERIC_SECRET, int(time.time())),
            "Content-Type": "application/json"}  # fmt: skip


def _assert_answered(response: httpx.Response) -> None:
    """A 2xx, or a 4xx naming its error: never a crash."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"], response.text


_STRIPE_VALID = [
    stripe_authorization_request("iauth_fuzz", "ic_unknown", 500),
    stripe_capture("ipi_fuzz", "ic_unknown", 500, "iauth_fuzz"),
]


@FUZZ
@given(data=st.data())
def test_stripe_webhooks_signed_but_mangled_never_crash(stack: Stack, data: st.DataObject) -> None:
    """Stripe events with mutated fields, signed with the right secret: answered or refused with a reason."""
    body = json.dumps(data.draw(mutated(data.draw(st.sampled_from(_STRIPE_VALID))))).encode()
    _assert_answered(httpx.post(f"{stack.url}/webhooks/stripe", content=body, headers=_stripe(body), timeout=10))


@FUZZ
@given(data=st.data())
def test_lithic_and_generic_webhooks_signed_but_mangled_never_crash(stack: Stack, data: st.DataObject) -> None:
    """Lithic ASA and generic requests with mutated fields, correctly signed."""
    lithic = json.dumps(data.draw(mutated(lithic_asa("tok_fuzz", "card_tok_unknown", 500)))).encode()
    _assert_answered(httpx.post(f"{stack.url}/webhooks/lithic", content=lithic, headers=_lithic(lithic), timeout=10))
    generic = json.dumps(data.draw(mutated(generic_authorization_request("gen_fuzz", "tok_unknown", 500)))).encode()
    response = httpx.post(f"{stack.url}/webhooks/generic", content=generic, headers=_generic(generic), timeout=10)
    _assert_answered(response)


@FUZZ
@given(
    body=st.binary(max_size=300),
    header=st.text(_HEADER_CHARS, max_size=120)
    | st.builds(lambda t, v: f"t={t},v1={v}", st.integers(), st.text(_HEADER_CHARS, max_size=70)),
    stale_by=st.integers(301, 10**6),
)
def test_bad_stale_or_replayed_signatures_are_refused(stack: Stack, body: bytes, header: str, stale_by: int) -> None:
    """Garbage signatures, and a correct signature whose timestamp is past the 300 s tolerance: 400."""
    forged = httpx.post(f"{stack.url}/webhooks/stripe", content=body,
                        headers={STRIPE_HEADER: header, "Content-Type": "application/json"}, timeout=10)  # fmt: skip
    assert forged.status_code == 400, forged.text
    assert forged.json()["error"].startswith("signature_"), forged.text
    replayed = httpx.post(
        f"{stack.url}/webhooks/stripe", content=body, headers=_stripe(body, int(time.time()) - stale_by), timeout=10
    )
    assert (replayed.status_code, replayed.json()["error"]) == (400, "signature_stale_timestamp")


# ───────────────────────────── the management API, from its OpenAPI document ─────────────────────────────


def test_the_management_api_never_crashes(stack: Stack) -> None:
    """Whatever schemathesis generates from the OpenAPI document (as an admin): no 5xx; a 4xx says why."""
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    seen: set[str] = set()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy())
    def call(case: Any) -> None:
        response = case.call(base_url=stack.url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=15)
        seen.add(f"{case.method} {case.path}")
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text}\n{stack.tail()}"
        )
        if response.status_code >= 400:
            body = response.json()
            assert body.get("error") or body.get("detail"), response.text

    call()
    assert len(seen) >= 8, f"schemathesis reached only {sorted(seen)}"


def test_the_log_of_a_clean_run_names_no_unhandled_error(stack: Stack, tmp_path: Path) -> None:
    """After the fuzzing above (this runs last in the module), the gateway still answers its health check."""
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
    assert tmp_path.exists()
