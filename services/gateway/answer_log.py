"""The answers in `gateway.answers`: the authorizer's, kept after they are sent, many rows per insert
(`AnswerLog`); and the lookups of what was answered before, many keys per query (`AnswerLookups`).

An answer the authorizer made needs no record before it is sent: a retry finds no row, asks the
authorizer again, and the authorizer gives every repeat of an authorization id its first decision.
The gateway's own declines (unknown card, deadline, unavailable) are the ones a retry must find,
and `Answering` records those before answering. So these rows are written off the answer's path,
in groups: while one insert runs, the answers sent meanwhile wait for the next (a group commit);
at 1,000 answers/s that is one round trip for several answers instead of one each (decision 0006).

A row whose key is taken (a deadline's decline recorded by another attempt, in another gateway
instance, between this attempt's lookup and its answer) is left as it is and logged
`answer_record_conflict`: what the table says then differs from what this attempt answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from services.platform.logging import get_logger
from services.platform.postgres import POSTGRES_FAILURES

_log = get_logger("gateway")
# An answer row: issuer, authorization id, card token, wallet id, card id, approved, reason,
# answered by, amount (minor units), currency.
AnswerRow = tuple[str, str, str, str | None, str | None, bool, str, str, int, str]
_COLUMNS = 10
_INSERT = """
INSERT INTO gateway.answers (issuer, issuer_authorization_id, card_token, wallet_id, card_id, approved, reason,
                             answered_by, amount_minor, currency)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[],
                     $8::text[], $9::bigint[], $10::text[])
ON CONFLICT (issuer, issuer_authorization_id) DO NOTHING
RETURNING issuer, issuer_authorization_id
"""
_RECORDED = """
SELECT issuer, issuer_authorization_id, approved, reason FROM gateway.answers
 WHERE (issuer, issuer_authorization_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
# The lookups' queries, by primary key only: one authorization (most groups below ~1,000/s), or up to
# LOOKUP_KEYS of one issuer (the rest NULL). As a list of point SELECTs, every branch stays an
# index probe on both columns whatever plan Postgres keeps for the prepared statement; an IN list
# or an array kept a generic plan probing on `issuer` alone and filtering every row of that issuer
# (on a table that was empty when first planned), and `unnest` planned every execution anew
# (80-140 us of Postgres CPU per query against 40 for one point SELECT; measured, decision 0006).
LOOKUP_KEYS = 8
_COLUMNS_FOUND = (
    "SELECT issuer_authorization_id, approved, reason, answered_by, card_token, amount_minor, currency"
    " FROM gateway.answers"
)
_LOOKUP_ONE = f"{_COLUMNS_FOUND} WHERE issuer = $1 AND issuer_authorization_id = $2"
_LOOKUP = "\nUNION ALL ".join(
    f"{_COLUMNS_FOUND} WHERE issuer = $1 AND issuer_authorization_id = ${n}" for n in range(2, LOOKUP_KEYS + 2)
)


class Recorded(NamedTuple):
    """What a lookup finds: the answer, and the request it answered (a retry asks the same again;
    an issuer reusing the id for another request does not).
    """

    approved: bool
    reason: str
    answered_by: str
    card_token: str
    amount_minor: int
    currency: str


MAX_GROUP = 1_000
MAX_WAITING = 100_000  # past this (Postgres away for long), the oldest rows are given up, logged
RETRY_PAUSE_S = 0.5


class AnswerLog:
    """Rows queued by `keep`, inserted in groups by one background task; `close` writes the rest."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: list[AnswerRow] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Rows not yet written."""
        return len(self._waiting)

    def keep(self, row: AnswerRow) -> None:
        """Queue one answer's row; the writer takes it with the next group."""
        self._waiting.append(row)
        if len(self._waiting) > MAX_WAITING:
            given_up, self._waiting = self._waiting[:-MAX_WAITING], self._waiting[-MAX_WAITING:]
            _log.error("answer_records_given_up", rows=len(given_up), first=given_up[0][1])
        if self._writer is None and not self._closed:
            self._writer = asyncio.create_task(self._write())

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write what waits (for at most `timeout_s`); what could not be written is logged."""
        self._closed = True
        if self._waiting and self._writer is None:
            self._writer = asyncio.create_task(self._write())
        if self._writer is not None:
            done, _ = await asyncio.wait([self._writer], timeout=timeout_s)
            if not done:
                self._writer.cancel()
        if self._waiting:
            _log.error("answer_records_unwritten", rows=len(self._waiting), first=self._waiting[0][1])

    async def _write(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    kept = await self._insert(group)
                except POSTGRES_FAILURES as error:
                    _log.warning("answer_records_retrying", rows=len(group), error=str(error)[:300])
                    self._waiting = group + self._waiting
                    if self._closed:
                        return
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                if len(kept) < len(group):
                    await self._compare([row for row in group if (row[0], row[1]) not in kept])
        finally:
            self._writer = None

    async def _compare(self, taken: list[AnswerRow]) -> None:
        """Rows whose key was taken: the same answer twice (attempts that shared one wait) is fine;
        a different one is logged. Best effort: Postgres failing here only loses the comparison.
        """
        try:
            rows = await self._pool.fetch(_RECORDED, [row[0] for row in taken], [row[1] for row in taken])
        except POSTGRES_FAILURES:
            return
        recorded = {(r["issuer"], r["issuer_authorization_id"]): (r["approved"], r["reason"]) for r in rows}
        for row in taken:
            if recorded.get((row[0], row[1]), (row[5], row[6])) != (row[5], row[6]):
                _log.warning("answer_record_conflict", issuer=row[0], authorization_id=row[1],
                             answered=row[6], recorded=recorded[(row[0], row[1])][1])  # fmt: skip

    async def _insert(self, group: Sequence[AnswerRow]) -> set[tuple[str, str]]:
        columns = [list(column) for column in zip(*group, strict=True)] if group else [[]] * _COLUMNS
        rows = await self._pool.fetch(_INSERT, *columns)
        return {(row["issuer"], row["issuer_authorization_id"]) for row in rows}


class AnswerLookups:
    """What was answered before to each (issuer, authorization id), looked up in groups.

    Every webhook asks this before anything else (a retry gets its first answer). One query at a
    time, like `AnswerLog`: the lookups asked while it runs go together in the next one. At
    1,000 webhooks/s that is a fraction of the round trips, and of the gateway's and Postgres' CPU,
    of a point SELECT each (decision 0006); an idle gateway's lookup starts at once, as before.
    A failed query fails every lookup of its group with its error.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Recorded | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def find(self, issuer: str, authorization_id: str) -> Recorded | None:
        """The answer recorded for this authorization, or None. Cancelling one lookup leaves the
        others of its group (a retry of the same authorization included) waiting for theirs.
        """
        future: asyncio.Future[Recorded | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((issuer, authorization_id), []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await future

    async def _read(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, {}
                try:
                    found = await self._fetch(list(group))
                except asyncio.CancelledError:
                    _fail(group, None)
                    raise
                except Exception as error:  # noqa: BLE001 - handed to every lookup of the group, as a point SELECT would
                    _fail(group, error)
                    continue
                for key, futures in group.items():
                    for future in futures:
                        if not future.done():  # cancelled: that attempt stopped waiting
                            future.set_result(found.get(key))
        finally:
            self._reader = None

    async def _fetch(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Recorded]:
        """The recorded answers of `keys`: one query per issuer and `LOOKUP_KEYS` ids, run together."""
        ids_by_issuer: dict[str, list[str]] = {}
        for issuer, authorization_id in keys:
            ids_by_issuer.setdefault(issuer, []).append(authorization_id)
        queries: list[tuple[str, list[str | None]]] = [
            (issuer, [*chunk, *[None] * (LOOKUP_KEYS - len(chunk))] if len(chunk) > 1 else [*chunk])
            for issuer, ids in ids_by_issuer.items()
            for chunk in (ids[at : at + LOOKUP_KEYS] for at in range(0, len(ids), LOOKUP_KEYS))
        ]
        results = await asyncio.gather(
            *(self._pool.fetch(_LOOKUP if len(ids) > 1 else _LOOKUP_ONE, issuer, *ids) for issuer, ids in queries)
        )
        return {
            (issuer, row["issuer_authorization_id"]): Recorded(*(row[column] for column in Recorded._fields))
            for (issuer, _), rows in zip(queries, results, strict=True)
            for row in rows
        }


def _fail(group: dict[tuple[str, str], list[asyncio.Future[Recorded | None]]], error: Exception | None) -> None:
    """Every lookup of `group` still waiting gets `error`; is cancelled when None (the gateway stopping)."""
    for futures in group.values():
        for future in futures:
            if future.done():
                continue
            if error is None:
                future.cancel()
            else:
                future.set_exception(error)
