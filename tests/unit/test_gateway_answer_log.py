"""`AnswerLog`: the authorizer's answers kept in groups after they are sent; `AnswerLookups`: what
was answered before, looked up in groups. Postgres is played by a fake pool here (what each
statement received); the webhook tests on the real services show the rows land and are found.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from services.gateway import answer_log
from services.gateway.answer_log import AnswerLog, AnswerLookups, AnswerRow, Recorded


def _found(approved: bool, reason: str) -> Recorded:  # noqa: FBT001 - the answer's flag
    """What a lookup finds of a row the fake pool holds (answered by the authorizer, 100 USD on "tok")."""
    return Recorded(approved, reason, "authorizer", "tok", 100, "USD")


def _row(authorization_id: str) -> AnswerRow:
    return ("stripe", authorization_id, "tok", "w1", "c1", True, "approved", "authorizer", 100, "USD")


class FakePool:
    """Records each insert's rows; `gate` holds inserts back; `failures` makes the next ones fail."""

    def __init__(self, recorded: dict[tuple[str, str], tuple[bool, str]] | None = None) -> None:
        self.groups: list[list[str]] = []
        self.lookups: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0
        self.recorded = recorded or {}

    async def fetch(self, query: str, *columns: Any) -> list[dict[str, Any]]:
        """The comparison's SELECT, or the insert: what it kept (ON CONFLICT DO NOTHING)."""
        if query in {answer_log._LOOKUP, answer_log._LOOKUP_ONE}:  # noqa: SLF001 - one issuer, its ids (NULL-padded)
            self.lookups.append([a for a in columns[1:] if a is not None])
            await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise OSError("connection refused")
            return [
                {
                    "issuer_authorization_id": a,
                    "approved": v[0],
                    "reason": v[1],
                    "answered_by": "authorizer",
                    "card_token": "tok",
                    "amount_minor": 100,
                    "currency": "USD",
                }
                for a in columns[1:]
                if (v := self.recorded.get((columns[0], a))) is not None
            ]
        if query is answer_log._RECORDED:  # noqa: SLF001
            return [
                {
                    "issuer": i,
                    "issuer_authorization_id": a,
                    "approved": v[0],
                    "reason": v[1],
                }
                for i, a in zip(columns[0], columns[1], strict=True)
                if (v := self.recorded.get((i, a))) is not None
            ]
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        self.groups.append(list(columns[1]))
        kept = []
        for issuer, authorization_id, approved, reason in zip(columns[0], columns[1], columns[5], columns[6],
                                                              strict=True):  # fmt: skip
            if (issuer, authorization_id) not in self.recorded:
                self.recorded[(issuer, authorization_id)] = (approved, reason)
                kept.append({"issuer": issuer, "issuer_authorization_id": authorization_id})
        return kept


async def _settled(log: AnswerLog) -> None:
    for _ in range(200):
        if not log.waiting and log._writer is None:  # noqa: SLF001
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the writer did not finish")


async def test_answers_sent_during_an_insert_go_together_in_the_next() -> None:
    """A group commit: one insert at a time; what queues meanwhile is the next insert."""
    pool = FakePool()
    log = AnswerLog(pool)
    pool.gate.clear()
    log.keep(_row("a"))
    await asyncio.sleep(0.001)  # the first insert is under way, holding "a"
    for authorization_id in ("b", "c", "d"):
        log.keep(_row(authorization_id))
    pool.gate.set()
    await _settled(log)
    assert pool.groups == [["a"], ["b", "c", "d"]]


async def test_rows_wait_while_postgres_is_away_and_none_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed insert is tried again with the same rows."""
    monkeypatch.setattr(answer_log, "RETRY_PAUSE_S", 0.001)
    pool = FakePool()
    pool.failures = 3
    log = AnswerLog(pool)
    log.keep(_row("a"))
    log.keep(_row("b"))
    await _settled(log)
    assert sorted(a for group in pool.groups for a in group) == ["a", "b"]


async def test_a_different_answer_on_record_is_logged_the_same_one_is_not() -> None:
    """Two attempts that shared one wait keep the same row twice: no noise; a different one is logged."""
    pool = FakePool(
        recorded={("stripe", "same"): (True, "approved"), ("stripe", "other"): (False, "deadline_exceeded")}
    )
    log = AnswerLog(pool)
    with structlog.testing.capture_logs() as logs:
        log.keep(_row("same"))
        log.keep(_row("other"))
        log.keep(_row("new"))
        await _settled(log)
    conflicts = [entry for entry in logs if entry["event"] == "answer_record_conflict"]
    assert [(c["authorization_id"], c["answered"], c["recorded"]) for c in conflicts] == [
        ("other", "approved", "deadline_exceeded")
    ]
    assert pool.recorded[("stripe", "new")] == (True, "approved")


async def test_close_writes_what_waits() -> None:
    """A stop writes the rows still queued."""
    pool = FakePool()
    log = AnswerLog(pool)
    pool.gate.clear()
    log.keep(_row("a"))
    log.keep(_row("b"))
    pool.gate.set()
    await log.close(timeout_s=5)
    assert sorted(a for group in pool.groups for a in group) == ["a", "b"]
    assert log.waiting == 0


async def test_lookups_asked_during_a_query_go_together_in_the_next() -> None:
    """One query at a time; the lookups asked meanwhile (a retry of the same id among them) share the next."""
    pool = FakePool(recorded={("stripe", "b"): (False, "deadline_exceeded")})
    lookups = AnswerLookups(pool)
    pool.gate.clear()
    first = asyncio.create_task(lookups.find("stripe", "a"))
    await asyncio.sleep(0.001)  # the first query is under way, holding "a"
    rest = [asyncio.create_task(lookups.find("stripe", a)) for a in ("b", "c", "b")]
    await asyncio.sleep(0.001)
    pool.gate.set()
    assert await first is None
    assert await asyncio.gather(*rest) == [_found(False, "deadline_exceeded"), None,
                                           _found(False, "deadline_exceeded")]  # fmt: skip
    assert pool.lookups == [["a"], ["b", "c"]]


async def test_a_group_is_asked_by_issuer_in_lists_of_lookup_keys() -> None:
    """Each query holds one issuer and at most LOOKUP_KEYS ids; every lookup gets its own answer."""
    ids = [f"a{n}" for n in range(answer_log.LOOKUP_KEYS + 3)]
    pool = FakePool(recorded={("stripe", ids[-1]): (True, "approved"), ("lithic", "a0"): (False, "card_not_found")})
    lookups = AnswerLookups(pool)
    found = await asyncio.gather(*(lookups.find("stripe", a) for a in ids), lookups.find("lithic", "a0"))
    assert found[-2:] == [_found(True, "approved"), _found(False, "card_not_found")]
    assert found[:-2] == [None] * (len(ids) - 1)
    assert pool.lookups == [ids[: answer_log.LOOKUP_KEYS], ids[answer_log.LOOKUP_KEYS :], ["a0"]]


async def test_a_failed_lookup_fails_its_group_and_the_next_one_asks_again() -> None:
    """Postgres away: every lookup of that query gets its error (the caller declines); later ones work."""
    pool = FakePool(recorded={("stripe", "a"): (True, "approved")})
    pool.failures = 1
    lookups = AnswerLookups(pool)
    results = await asyncio.gather(lookups.find("stripe", "a"), lookups.find("stripe", "b"), return_exceptions=True)
    assert [type(result) for result in results] == [OSError, OSError]
    assert await lookups.find("stripe", "a") == _found(True, "approved")


async def test_a_cancelled_lookup_leaves_the_others_of_its_group_their_answer() -> None:
    """An attempt whose deadline passed stops waiting; a retry waiting on the same query still gets its answer."""
    pool = FakePool(recorded={("stripe", "a"): (True, "approved")})
    lookups = AnswerLookups(pool)
    pool.gate.clear()
    cancelled = asyncio.create_task(lookups.find("stripe", "a"))
    kept = asyncio.create_task(lookups.find("stripe", "a"))
    await asyncio.sleep(0.001)
    cancelled.cancel()
    pool.gate.set()
    assert await kept == _found(True, "approved")
    assert cancelled.cancelled()
