"""The gateway's part in an authorization: resolve the card, publish the request, wait for the
authorizer's decision until the deadline, and record the answer. It never decides on money; the
only answers it makes itself are declines: an unknown card, the deadline passed, the system
unavailable. After a deadline it publishes `authorization_expired` so that a late approval's hold
is released (fail closed). A retried webhook gets the recorded answer again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import ValidationError

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested, DecisionOutcome
from schemas.common import Issuer, ReasonCode
from schemas.issuer_events import AnyIssuerEvent, AuthorizationApprovedByIssuer, AuthorizationExpired
from schemas.money import Money
from schemas.registry import serialize
from schemas.topics import Topic, message_key, topic_name
from services.gateway.answer_log import AnswerLog, AnswerLookups, AnswerRow
from services.gateway.directory import CardDirectory, CardRef
from services.gateway.issuers import Ask, Notice, WebhookInvalid
from services.gateway.metrics import ANSWER_SECONDS, ANSWERS, DEADLINE_MISSES, STAGE_SECONDS
from services.gateway.replies import Overloaded, Replies
from services.platform.kafka import Publisher
from services.platform.logging import get_logger
from services.platform.postgres import POSTGRES_FAILURES

_log = get_logger("gateway")
# Recording a deadline's decline: too slow, or Postgres failing.
_LATE_OR_FAILED: tuple[type[BaseException], ...] = (TimeoutError, *POSTGRES_FAILURES)
# Ids of what the gateway publishes, derived from the issuer's ids: a retried webhook publishes the
# same ids again, and the authorizer applies it once.
GATEWAY_NAMESPACE = uuid.UUID("0b6f3f5e-59a3-4c8e-9a53-6c1d0f0e7a11")
# How long past the deadline the gateway may take to record its decline before sending it.
RECORD_GRACE = timedelta(milliseconds=250)
_STAGES = ("lookup", "publish", "decision")  # STAGE_SECONDS, in order
# How long an expiry that could not be recorded as owed (Postgres away) is retried in memory.
UNRECORDED_EXPIRY_TRIES_S = 600.0
# How long a deadline's decline is remembered in memory for attempts that joined its wait.
_DECLINES_REMEMBERED_S = 30.0


def issuer_event_id(issuer: Issuer, *parts: str) -> uuid.UUID:
    """The id of what the gateway publishes for the issuer's `parts`."""
    return uuid.uuid5(GATEWAY_NAMESPACE, "|".join((issuer.value, *parts)))


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    """What the issuer is told."""

    approved: bool
    reason: ReasonCode
    answered_by: str  # "authorizer" or "gateway"
    decision: DecisionOutcome | AuthorizationDecided | None = None


def _declined(reason: ReasonCode) -> Answer:
    """A decline the gateway makes itself (no decision came, or none could be asked for)."""
    return Answer(approved=False, reason=reason, answered_by="gateway")


@dataclass
class _Attempt:
    """How far one authorization got, for what the deadline must undo or record."""

    card: CardRef | None = None
    request: AuthorizationRequested | None = None
    future: asyncio.Future[DecisionOutcome] | None = None


def _row(ask: Ask, card: CardRef | None, answer: Answer) -> AnswerRow:
    """The `gateway.answers` row of `answer` to `ask`."""
    return (
        ask.issuer.value, ask.issuer_authorization_id, ask.card_token, card.wallet_id if card else None,
        card.card_id if card else None,
        answer.approved, answer.reason.value, answer.answered_by, ask.amount.amount_minor, ask.amount.currency,
    )  # fmt: skip


def _asks_otherwise(first: Ask, again: Ask) -> bool:
    """True when `again` is not a retry of `first`: another card, amount or currency."""
    return (again.card_token, again.amount) != (first.card_token, first.amount)


def _reused(ask: Ask, first: str) -> Answer:
    """Declined, not recorded: this request reuses the id of an earlier, different one (`first`).
    A retry asks the same again; giving this one the earlier answer would approve an amount, or a
    card, nobody checked. The earlier request keeps its answer and its id.
    """
    _log.warning("authorization_id_reused", issuer=ask.issuer.value, authorization_id=ask.issuer_authorization_id,
                 amount_minor=ask.amount.amount_minor, currency=ask.amount.currency, card_token=ask.card_token,
                 first=first)  # fmt: skip
    return _declined(ReasonCode.INVALID_REQUEST)


def _expiry(  # noqa: PLR0917 - the fields of the event, from a request or an answer's row
    issuer: Issuer, authorization_id: str, wallet_id: str, card_id: str, amount: Money, now: datetime
) -> AuthorizationExpired:
    """The gateway's expiry of an authorization it declined itself (its id derived, so repeats apply
    once), with the amount its request asked for: the authorizer then leaves alone the hold of an
    earlier, different request that used the same id (version 2).
    """
    return AuthorizationExpired(
        schema_version=2,
        amount=amount,
        event_id=issuer_event_id(issuer, "deadline", authorization_id),
        wallet_id=wallet_id,
        card_id=card_id,
        issuer=issuer,
        occurred_at=now,
        issuer_authorization_id=authorization_id,
        cause="gateway_deadline",
    )


class CardUnknown(LookupError):
    """A lifecycle event for a card we do not have."""


class Answering:
    """Authorizations and lifecycle events from every issuer, on their way to Kafka."""

    def __init__(
        self,
        *,
        broker: Publisher,
        pool: asyncpg.Pool,
        directory: CardDirectory,
        waiter: Replies[DecisionOutcome],
        topic_prefix: str,
        deadline: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._broker = broker
        self._pool = pool
        self._directory = directory
        self._waiter = waiter
        self._prefix = topic_prefix
        self._deadline = deadline
        self._clock = clock
        self._pending_work: set[asyncio.Task[None]] = set()
        self._answer_log = AnswerLog(pool)
        self._lookups = AnswerLookups(pool)
        # Deadline declines given here lately (authorization id → answer, monotonic time): an attempt
        # that joined the same wait and got the decision late must give the same decline.
        self._declines: OrderedDict[str, tuple[Answer, float]] = OrderedDict()
        # The request each authorization id is being asked for here now (its first attempt's): a
        # retry asking the same joins it; another request reusing the id is refused (`_reused`).
        self._asking: dict[tuple[Issuer, str], Ask] = {}

    async def authorize(self, ask: Ask) -> Answer:
        """The answer to `ask`, within the deadline whatever happens; the same answer for a retry.

        The deadline covers everything from the webhook's arrival (looking up the card, publishing,
        waiting, recording): past it, the answer is decline, recorded first (for at most
        `RECORD_GRACE`, so a retry right after the answer gets it too); the expiry is published after.
        """
        started = time.perf_counter()
        attempt = _Attempt()
        key = (ask.issuer, ask.issuer_authorization_id)
        self._asking.setdefault(key, ask)
        try:
            answer = await asyncio.wait_for(self._answer(ask, attempt), self._deadline.total_seconds())
        except TimeoutError:
            DEADLINE_MISSES.labels(ask.issuer.value).inc()
            answer = _declined(ReasonCode.DEADLINE_EXCEEDED)
            self._remember_decline(ask, answer)
            recorded = await self._record_deadline(ask, attempt)
            self._later(self._after_deadline(ask, attempt, recorded=recorded))
        except POSTGRES_FAILURES as error:
            # Postgres unreachable (looking up the card, or recording the answer): decline, fail closed;
            # a decision that may have come meanwhile is expired so its hold is released.
            _log.error(
                "authorization_store_failed", error=str(error)[:300], authorization_id=ask.issuer_authorization_id
            )
            answer = _declined(ReasonCode.SYSTEM_UNAVAILABLE)
            if attempt.future is not None:
                attempt.future.cancel()
            if attempt.request is not None:
                self._later(self._expire_unrecorded(attempt.request))
        finally:
            if self._asking.get(key) is ask:
                del self._asking[key]
        ANSWER_SECONDS.labels(ask.issuer.value).observe(time.perf_counter() - started)
        ANSWERS.labels(ask.issuer.value, "approved" if answer.approved else "declined", answer.reason.value).inc()
        return answer

    def _remember_decline(self, ask: Ask, answer: Answer) -> None:
        now = time.monotonic()
        self._declines[ask.issuer_authorization_id] = (answer, now)
        while self._declines:
            oldest, (_, at) = next(iter(self._declines.items()))
            if now - at < _DECLINES_REMEMBERED_S:
                break
            del self._declines[oldest]

    def _declined_here(self, ask: Ask) -> Answer | None:
        remembered = self._declines.get(ask.issuer_authorization_id)
        return None if remembered is None else remembered[0]

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._pending_work.add(task)
        task.add_done_callback(self._pending_work.discard)

    async def close(self, timeout_s: float = 20.0) -> None:
        """Finish what was left for after an answer (expiries and records of late declines), for at
        most `timeout_s`: a stop must end. What is cut short is logged; an expiry not published leaves
        a late approval's hold to age out (7 days by default) rather than be released at once.
        """
        if self._pending_work:
            await self._finish_pending_work(timeout_s)
        await self._answer_log.close(timeout_s)

    async def _finish_pending_work(self, timeout_s: float) -> None:
        pending = list(self._pending_work)
        done, unfinished = await asyncio.wait(pending, timeout=timeout_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            _log.error("shutdown_work_cut_short", unfinished=len(unfinished), finished=len(done))

    async def _record_deadline(self, ask: Ask, attempt: _Attempt) -> bool:
        """Record the deadline's decline before it is sent, so that a retry arriving just after the
        answer finds it (and is not asked of the authorizer, whose late approval would differ). At
        most `RECORD_GRACE` past the deadline: our deadline (1.5 s) leaves Stripe's (2 s) room for it.
        False when it could not be recorded in that time; the answer is sent anyway.
        """
        try:
            async with asyncio.timeout(RECORD_GRACE.total_seconds()):
                await self._record(
                    ask,
                    attempt.card,
                    _declined(ReasonCode.DEADLINE_EXCEEDED),
                    overwrite=True,
                    expiry_owed=attempt.request is not None,
                )
        except _LATE_OR_FAILED as error:
            _log.error(
                "deadline_record_late", error=str(error) or "timeout", authorization_id=ask.issuer_authorization_id
            )
            return False
        return True

    async def _after_deadline(self, ask: Ask, attempt: _Attempt, *, recorded: bool) -> None:
        """The answer was decline: release a late approval's hold, and record what was answered if
        that could not be done before the answer. An expiry not published stays owed on the answer's
        row, for `relay_owed_expiries`.
        """
        if attempt.future is not None:
            attempt.future.cancel()
        published = attempt.request is None or await self._expire(attempt.request)
        try:
            if not recorded:
                await self._record(
                    ask,
                    attempt.card,
                    _declined(ReasonCode.DEADLINE_EXCEEDED),
                    overwrite=True,
                    expiry_owed=not published,
                )
            elif attempt.request is not None and published:
                await self._expiry_paid(ask)
        except POSTGRES_FAILURES as error:
            _log.error("deadline_record_failed", error=str(error), authorization_id=ask.issuer_authorization_id)
            if not recorded and not published and attempt.request is not None:
                await self._expire_unrecorded(attempt.request)  # neither sent nor owed anywhere: from memory

    async def _expire_unrecorded(self, request: AuthorizationRequested) -> None:
        """Postgres away: the expiry cannot be recorded as owed, so this task keeps publishing it
        (backing off to 30 s) for up to `UNRECORDED_EXPIRY_TRIES_S`; a stop cuts it short (logged by
        `close`).
        """
        given_up_at, pause = time.monotonic() + UNRECORDED_EXPIRY_TRIES_S, 0.5
        while not await self._expire(request):
            if time.monotonic() >= given_up_at:
                _log.error("expiry_given_up", authorization_id=request.issuer_authorization_id)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    async def _expire_owed(self, ask: Ask, request: AuthorizationRequested) -> None:
        """Publish the expiry recorded as owed with the answer, and say it is paid."""
        if not await self._expire(request):
            return  # still owed: the relay publishes it
        try:
            await self._expiry_paid(ask)
        except POSTGRES_FAILURES as error:
            _log.error("expiry_paid_record_failed", error=str(error), authorization_id=ask.issuer_authorization_id)

    async def _expiry_paid(self, ask: Ask) -> None:
        await self._expiries_paid([(ask.issuer.value, ask.issuer_authorization_id)])

    async def _expiries_paid(self, keys: list[tuple[str, str]]) -> None:
        """These answers' expiries are published: nothing owed on them any more."""
        await self._pool.execute(
            """UPDATE gateway.answers SET expiry_owed_since = NULL
               WHERE (issuer, issuer_authorization_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                 AND expiry_owed_since IS NOT NULL""",
            [issuer for issuer, _ in keys], [authorization_id for _, authorization_id in keys],
        )  # fmt: skip

    async def relay_owed_expiries(self, older_than: timedelta = timedelta(seconds=10), limit: int = 500) -> int:
        """Publish the expiries still owed (recorded with a decline more than `older_than` ago: the
        answering attempt itself had that long) and mark them paid; return how many. The expiry's
        id is derived from the authorization, so one published twice (two gateways relaying) is
        applied once.
        """
        rows = await self._pool.fetch(
            """SELECT issuer, issuer_authorization_id, wallet_id, card_id, amount_minor, currency FROM gateway.answers
               WHERE expiry_owed_since < now() - $1::interval ORDER BY expiry_owed_since LIMIT $2""",
            older_than, limit,
        )  # fmt: skip
        paid: list[tuple[str, str]] = []
        for row in rows:
            expired = _expiry(Issuer(row["issuer"]), row["issuer_authorization_id"], row["wallet_id"], row["card_id"],
                              Money.of(row["amount_minor"], row["currency"]), self._clock())  # fmt: skip
            try:
                await self._publish(Topic.ISSUER_EVENTS, expired)
            except Exception as error:  # noqa: BLE001 - Kafka still away: the rest waits for the next round
                _log.warning("owed_expiries_waiting", error=str(error)[:300], owed=len(rows) - len(paid))
                break
            paid.append((row["issuer"], row["issuer_authorization_id"]))
        if paid:
            await self._expiries_paid(paid)
            _log.info("owed_expiries_relayed", count=len(paid))
        return len(paid)

    async def run_expiry_relay(self, every: timedelta = timedelta(seconds=5)) -> None:
        """`relay_owed_expiries` every `every`, until cancelled (the gateway's lifespan runs it)."""
        while True:
            await asyncio.sleep(every.total_seconds())
            try:
                await self.relay_owed_expiries()
            except POSTGRES_FAILURES as error:
                _log.warning("owed_expiries_unread", error=str(error)[:300])

    async def _answered_here(self, ask: Ask, attempt: _Attempt) -> Answer | None:
        """The answer given without asking the authorizer, if any: to another request reusing an id
        being asked now, a retry of an answered one, an unknown card. Finds the card
        (`attempt.card`) for the rest.
        """
        asking = self._asking[(ask.issuer, ask.issuer_authorization_id)]
        if asking is not ask and _asks_otherwise(asking, ask):
            return _reused(ask, f"{asking.amount} on card token {asking.card_token}, being asked now")
        earlier = await self._recorded(ask)
        if earlier is not None:
            return earlier
        card = attempt.card = await self._directory.find(ask.issuer, ask.card_token)
        if card is None:
            return await self._record(ask, None, _declined(ReasonCode.CARD_NOT_FOUND))
        return None

    async def _answer(self, ask: Ask, attempt: _Attempt) -> Answer:
        started, now = time.perf_counter(), self._clock()
        here = await self._answered_here(ask, attempt)
        if here is not None:
            return here
        card = attempt.card
        assert card is not None  # noqa: S101 - _answered_here found it
        request = AuthorizationRequested(
            event_id=issuer_event_id(ask.issuer, "request", ask.issuer_authorization_id),
            wallet_id=card.wallet_id,
            card_id=card.card_id,
            issuer=ask.issuer,
            issuer_authorization_id=ask.issuer_authorization_id,
            amount=ask.amount,
            merchant_amount=ask.merchant_amount,
            merchant=ask.merchant,
            requested_at=now,
            deadline_at=now + self._deadline,
            # An increment is decided by the authorizer against every cap, and grows the hold of the
            # authorization it adds to (version 2, decision 0006).
            schema_version=1 if ask.increment_of is None else 2,
            increment_of=ask.increment_of,
        )
        try:
            future = attempt.future = self._waiter.expect(ask.issuer_authorization_id)
        except Overloaded as error:
            _log.warning("authorization_refused_overloaded", error=str(error))
            return await self._record(ask, card, _declined(ReasonCode.SYSTEM_UNAVAILABLE))
        try:
            attempt.request = request  # from here on, a deadline publishes its expiry
            marks = [time.perf_counter()]
            await self._publish(Topic.AUTH_REQUESTS, request)
            marks.append(time.perf_counter())
            decision = await asyncio.shield(future)
            marks.append(time.perf_counter())
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not future.cancelled() or (current is not None and current.cancelling()):
                raise  # this attempt itself is being cancelled (its own deadline, or a stop)
            # A retry that joined an earlier attempt's wait: that attempt ran out of time and was
            # answered decline; this one gets the same answer (recorded once, whichever comes first).
            return await self._record(ask, card, _declined(ReasonCode.DEADLINE_EXCEEDED))
        except Exception as error:  # noqa: BLE001 - Kafka unreachable or refusing: decline (fail closed)
            _log.error("authorization_publish_failed", error=str(error))
            future.cancel()
            # The request may have landed all the same (an ack lost with the connection): if it is
            # approved, its hold is released like a late approval's (owed until published).
            answer = await self._record(ask, card, _declined(ReasonCode.SYSTEM_UNAVAILABLE), expiry_owed=True)
            if answer.answered_by == "gateway":  # not an approval another attempt recorded meanwhile
                self._later(self._expire_owed(ask, request))
            return answer
        for stage, begun, ended in zip(_STAGES, [started, *marks[:-1]], marks, strict=True):
            STAGE_SECONDS.labels(stage).observe(ended - begun)
        return self._authorizers_answer(ask, card, decision)

    def _authorizers_answer(self, ask: Ask, card: CardRef, decision: DecisionOutcome) -> Answer:
        """The decision as the answer, kept in `gateway.answers` after it is sent (`AnswerLog`): a
        retry that finds no row asks the authorizer, which repeats its first decision. Unless another
        attempt here reached the deadline first and answered decline: then that decline again.
        """
        declined = self._declined_here(ask)
        if declined is not None:
            return declined
        if decision.card_id != card.card_id or decision.amount != ask.amount:
            # The authorizer repeats its first decision for an id: that of another request.
            return _reused(ask, f"{decision.amount} on card {decision.card_id}")
        answer = Answer(decision.approved, decision.reason, "authorizer", decision)
        self._answer_log.keep(_row(ask, card, answer))
        return answer

    async def _expire(self, request: AuthorizationRequested) -> bool:
        """Past the deadline: say so on issuer.events, so a late approval's hold is released. False
        when Kafka refused it (logged; the caller leaves it owed).
        """
        expired = _expiry(request.issuer, request.issuer_authorization_id, request.wallet_id, request.card_id,
                          request.amount, self._clock())  # fmt: skip
        try:
            await self._publish(Topic.ISSUER_EVENTS, expired)
        except Exception as error:  # noqa: BLE001 - the issuer still gets its decline; the gap is logged
            _log.error("expiry_publish_failed", error=str(error), authorization_id=request.issuer_authorization_id)
            return False
        return True

    async def _recorded(self, ask: Ask) -> Answer | None:
        row = await self._lookups.find(ask.issuer.value, ask.issuer_authorization_id)
        if row is None:
            return None
        if (row.card_token, row.amount_minor, row.currency) != (
            ask.card_token,
            ask.amount.amount_minor,
            ask.amount.currency,
        ):
            return _reused(ask, f"{row.amount_minor} {row.currency} on card token {row.card_token}")
        return Answer(row.approved, ReasonCode(row.reason), row.answered_by)

    async def _record(
        self, ask: Ask, card: CardRef | None, answer: Answer, *, overwrite: bool = False, expiry_owed: bool = False
    ) -> Answer:
        """Keep the answer; if a concurrent retry recorded one first, that one is the answer (unless
        `overwrite`: a deadline's decline was already sent, so it is what stands). `expiry_owed`: the
        request may be on Kafka and an expiry must follow (see `relay_owed_expiries`).
        """
        conflict = (
            "DO UPDATE SET approved = EXCLUDED.approved, reason = EXCLUDED.reason, answered_by = EXCLUDED.answered_by,"
            " answered_at = now(),"
            " expiry_owed_since = coalesce(answers.expiry_owed_since, EXCLUDED.expiry_owed_since)"
            if overwrite
            else "DO NOTHING"
        )
        row = await self._pool.fetchrow(
            f"""INSERT INTO gateway.answers (issuer, issuer_authorization_id, card_token, wallet_id, card_id, approved,
                                            reason, answered_by, amount_minor, currency, expiry_owed_since)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $11 THEN now() END)
                ON CONFLICT (issuer, issuer_authorization_id) {conflict} RETURNING approved""",  # noqa: S608 - one of two literals
            *_row(ask, card, answer),
            expiry_owed,
        )
        if row is None:
            return await self._recorded(ask) or answer
        return answer

    async def notify(self, notice: Notice) -> bool:
        """Publish a lifecycle event on issuer.events; CardUnknown when the card is not ours. False
        when there was nothing to publish: the issuer's approval of an authorization that was ours
        to approve, and was (its hold is the authorizer's already).
        """
        card = await self._directory.find(notice.issuer, notice.card_token)
        if card is None:
            raise CardUnknown(f"no card {notice.card_token!r} for {notice.issuer.value}")
        if notice.event_type is AuthorizationApprovedByIssuer and await self._approved_here(notice):
            return False
        try:
            event = notice.event_type.model_validate(
                notice.fields
                | {
                    "event_id": issuer_event_id(notice.issuer, "event", notice.issuer_event_id),
                    "wallet_id": card.wallet_id,
                    "card_id": card.card_id,
                    "issuer": notice.issuer,
                    "occurred_at": notice.occurred_at,
                }
            )
        except ValidationError as error:
            problem = error.errors()[0]
            raise WebhookInvalid(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
        await self._publish(Topic.ISSUER_EVENTS, event)
        return True

    async def _approved_here(self, notice: Notice) -> bool:
        """True when the answer on record for the authorization the issuer approved is our approval,
        of as much. Anything else (our decline, our deadline's, none on record: a stand-in, or an
        answer not recorded yet; more than we approved: an increment) is published; the authorizer
        holds what it does not hold already.
        """
        authorization_id, amount = notice.fields["issuer_authorization_id"], notice.fields["amount"]
        row = await self._lookups.find(notice.issuer.value, authorization_id)
        if (
            row is not None
            and row.approved
            and row.currency == amount.currency
            and row.amount_minor >= amount.amount_minor
        ):
            return True
        answered = "nothing" if row is None else f"{row.reason} {row.amount_minor} {row.currency}"
        _log.warning("approved_by_issuer", issuer=notice.issuer.value, authorization_id=authorization_id,
                     amount_minor=amount.amount_minor, currency=amount.currency, answered=answered)  # fmt: skip
        return False

    async def _publish(self, topic: Topic, message: AuthorizationRequested | AnyIssuerEvent) -> None:
        """Send and wait for Kafka's acknowledgement (acks=all): nothing is answered on a lost request."""
        await self._broker.publish(serialize(message), topic=topic_name(topic, self._prefix), key=message_key(message))
