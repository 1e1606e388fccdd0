"""The authorizer's imperative shell: consume a batch → load → decide → persist with offsets →
publish. Partitions are claimed with a new epoch on assignment and read from the offsets kept in
Postgres. Business rules live in `services.authorizer.domain`, never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import ConsumerRecord

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.issuer_events import (
    ISSUER_EVENT_TYPES,
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationExpired,
    AuthorizationReversed,
    RefundPosted,
)
from schemas.registry import InvalidMessage, parse, serialize
from schemas.topics import Topic, message_key, topic_name
from schemas.wallet import CardCreated, CreateCard, StatusChanged, WalletCreated
from services.authorizer import metrics
from services.authorizer.commands import rejection
from services.authorizer.decide import Decided, derived_id
from services.authorizer.domain import Inbound, Outbound, decide, sweep
from services.authorizer.state import MEMORY_HORIZON, NO_RATES, RateTable, WalletState, recollect
from services.authorizer.store import BatchEffects, CardDirectory, Fenced, OutboxRow, Store
from services.platform.consuming import dead_letter_payload
from services.platform.kafka import create_consumer, create_producer, partition_for, send_in_batches, start_producer
from services.platform.logging import get_logger
from services.platform.postgres import transient
from services.platform.service import GC_COLLECTIONS, GC_SECONDS
from services.platform.settings import Settings

INPUT_TOPICS = (Topic.WALLET_COMMANDS, Topic.ISSUER_EVENTS, Topic.AUTH_REQUESTS)
# Within one batch, commands and lifecycle events of the same instant go before requests: a freeze
# that arrives with an authorization is applied first (fail closed).
_TOPIC_ORDER = {topic: rank for rank, topic in enumerate(INPUT_TOPICS)}
# Where each produced event is published: the whole outbound flow in one table.
OUTPUT_TOPIC: dict[str, Topic] = {
    "authorization_decided": Topic.AUTH_DECISIONS,
    "authorization_expired": Topic.ISSUER_EVENTS,
    **dict.fromkeys(
        ("wallet_created", "card_created", "caps_updated", "status_changed", "trace_bound", "cap_raised",
         "command_rejected", "cap_breached_by_issuer", "money_moved", "velocity_limit_set",
         "decline_streak_limit_set", "merchant_countries_set"),
        Topic.WALLET_EVENTS,
    ),
}  # fmt: skip
Record: TypeAlias = ConsumerRecord[bytes, bytes]
# How many wallets stay cached (least recently used evicted first). Each is ~20 objects that a full
# garbage collection walks (~13 µs per wallet on the bench machine: 0.26 s at 20,000), a pause
# every request in flight waits out; an evicted wallet is read again from Postgres when needed.
# Must stay far above the wallets two batches touch (2 x BATCH_MAX_RECORDS): evicting the least
# recently used then never reaches a wallet whose batch is still committing.
MAX_CACHED_WALLETS = 20_000
# How many decisions the cached wallets may remember in all, for repeats and lifecycle lookups.
# Each costs ~1.2 KB, and a full garbage collection walks the maps that hold them: ~0.07 s per
# 100,000 (each with its open hold) on the bench machine, a pause every request in flight waits
# out. Past it, the least recently used wallets are evicted, the busiest last; a wallet evicted is
# read from Postgres again when next needed, and repeats of its earlier authorizations are
# answered from Postgres.
MAX_REMEMBERED_DECISIONS = 200_000
# How far the gateway's and the authorizer's clocks may disagree (requested_at vs our now).
CLOCK_SKEW = timedelta(minutes=5)
# How many Kafka request timeouts a batch's acknowledgements may take before they count as failed.
ACK_TIMEOUTS = 3
# The load time of a wallet created in this instance, before any request could have been made.
NEVER_LOADED = datetime(1970, 1, 1, tzinfo=UTC)
# How often idle wallets are checked for holds past their expiry.
SWEEP_INTERVAL = timedelta(seconds=60)
# Outbox rows still unpublished this long after their commit are published again, by whichever
# instance looks (`_relay_stranded`, this often): no live instance is still sending them. A commit
# that went through while its client saw an error (a timeout as a paused instance resumed, the
# connection lost after COMMIT) leaves its rows for nobody: its batch is read again and found
# applied, so it publishes nothing, and the relay at start waits for a restart (issue 22).
STRANDED_AFTER = timedelta(seconds=10)
# How often the consumer lag gauge is worked out (it reads every assigned partition).
LAG_EVERY_MS = 1_000
BATCH_MAX_RECORDS = 500
# Issuer events are applied once per event id (the issuer retries webhooks; producers may repeat).
_ISSUER_EVENTS = tuple(ISSUER_EVENT_TYPES.values())
# Issuer events that count money by an authorization's decision (its trace, its exchange).
_NAMING_AN_AUTHORIZATION = (RefundPosted, AuthorizationCleared, AuthorizationReversed, AuthorizationApprovedByIssuer)
_log = get_logger("authorizer")


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class _Pending:
    """A batch decided and being committed (and then published) in the background."""

    batches: dict[TopicPartition, list[Record]]
    records: list[Record]
    effects: BatchEffects
    task: asyncio.Task[None]


@dataclass
class _Seen:
    """What a batch looked up before deciding: earlier decisions, applied issuer events, cards taken."""

    earlier: dict[str, Decided | AuthorizationDecided]
    applied: set[UUID]
    directory: CardDirectory

    def include(self, effects: BatchEffects) -> None:
        """Add what a batch being committed decided, applied and created."""
        self.earlier.update((decision.issuer_authorization_id, decision) for decision, _ in effects.decisions)
        self.applied.update(event_id for event_id, _ in effects.applied_events)
        for event in effects.directory:
            if isinstance(event, CardCreated):
                self.directory.add_created(event)


class Authorizer:
    """One authorizer instance: a consumer in the group, its producer, its wallet cache."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        clock: Callable[[], datetime] = utc_now,
        rates: RateTable = NO_RATES,
    ) -> None:
        self._settings = settings
        self._group = f"{settings.topic_prefix}.authorizer" if settings.topic_prefix else "pursestrings-authorizer"
        self._store = Store(pool, self._group)
        self._clock = clock
        self._rates = rates
        self._topics = {topic_name(topic, settings.topic_prefix): topic for topic in INPUT_TOPICS}
        self._requests_topic = topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix)
        self._output_topics = {kind: topic_name(topic, settings.topic_prefix) for kind, topic in OUTPUT_TOPIC.items()}
        self._lag_measured_ms = 0.0
        self._cache: OrderedDict[str, WalletState] = OrderedDict()
        self._remembered = 0  # decisions the cached wallets remember, in all
        # When each cached wallet was read from Postgres (see `_answer_would_be_in_memory`).
        self._loaded_at: dict[str, datetime] = {}
        self._publish_failed = False  # set when Kafka refused a publish; the loop then recovers
        # Bound on queueing a batch's sends and on waiting for their acks: past it the publish counts
        # as failed (the rows stay in the outbox and are relayed again with a new producer).
        self._send_timeout_s = ACK_TIMEOUTS * settings.kafka_request_timeout_ms / 1000
        self._epochs: dict[tuple[str, int], int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        # Where batch time goes (decide, commit, publish), for benchmarks and metrics.
        self.seconds_by_stage: dict[str, float] = dict.fromkeys(("decide", "commit", "publish"), 0.0)
        self.batches = self.records = 0
        self._producer: AIOKafkaProducer | None = None
        # Publishing overlaps the next batch: sends are queued in commit order, their acks awaited
        # in the background, and the rows marked published by the next commit.
        self._confirming: set[asyncio.Task[None]] = set()
        self._published: list[int] = []
        # A batch that failed for a reason other than Postgres being away: the end offset of each of
        # its partitions, read one record at a time until passed; and the offset of each partition's
        # record that failed alone once (both forgotten once the partition's position passes them).
        self._suspects: dict[tuple[str, int], int] = {}
        self._failed_once: dict[tuple[str, int], int] = {}
        # The batch being committed while the next is decided; bumped whenever the cache is cleared.
        self._pending: _Pending | None = None
        self._generation = 0

    async def start(self) -> None:
        """Join the group (claiming partitions as they come) and publish anything left unpublished."""
        self._producer = create_producer(self._settings)
        await self._producer.start()
        await self._relay_unpublished()
        self._consumer = create_consumer(
            self._settings, [], self._group, partition_assignment_strategy=(RangePartitionAssignor,)
        )
        self._consumer.subscribe(topics=list(self._topics), listener=_Claimer(self))
        await self._consumer.start()

    async def stop(self) -> None:
        """Finish the batch being committed, leave the group, wait for what is being published and
        record it.
        """
        with contextlib.suppress(Exception):  # a failed commit is read again by the next owner
            await self._drain()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._confirmed()
        if self._published:
            await self._store.mark_published(self._published)
            self._published = []
        if self._producer is not None:
            await self._producer.stop()
        _log.info(
            "authorizer_stopped",
            seconds_by_stage={k: round(v, 3) for k, v in self.seconds_by_stage.items()},
            batches=self.batches,
            records=self.records,
            gc_seconds={generation: round(seconds, 3) for generation, seconds in GC_SECONDS.items()},
            gc_collections=dict(GC_COLLECTIONS),
        )

    async def run(self) -> None:
        """Process batches until cancelled; sweep aged-out holds of idle wallets now and then, and
        forget rows past their retention beside the batches rather than between them: deleting a
        minute's worth of old rows takes long enough to miss an issuer's deadline (decision 0005).
        """
        last_sweep = last_relay = self._clock()
        forgetting: asyncio.Task[None] | None = None
        try:
            while True:
                if self._publish_failed:
                    await self._drain()
                    await self._recover_publishing()
                await self.process_batch()
                if self._clock() - last_relay >= STRANDED_AFTER:
                    last_relay = self._clock()
                    await self._relay_stranded()
                if self._clock() - last_sweep >= SWEEP_INTERVAL:
                    last_sweep = self._clock()
                    if forgetting is None or forgetting.done():
                        forgetting = asyncio.create_task(self.forget_old_rows())
                    await self.sweep_expired_holds()
        finally:
            if forgetting is not None:
                forgetting.cancel()

    async def forget_old_rows(self) -> None:
        """Delete postings no window needs, and published outbox rows and applied issuer events' ids
        past their retention; if Postgres fails meanwhile, what is left waits for the next sweep.
        """
        now = self._clock()
        try:
            postings = await self._store.forget_old_postings(now)
            outbox = await self._store.forget_published(now)
            applied = await self._store.forget_applied_events(now)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            _log.warning("old_rows_kept", error=_describe(error))
            return
        if postings or outbox or applied:
            _log.info("old_rows_forgotten", postings=postings, outbox=outbox, applied_events=applied)

    async def sweep_expired_holds(self) -> int:
        """Release holds past their expiry on wallets of our partitions, through the usual commit."""
        if not await self._drain():
            return 0
        now = self._clock()
        due = [(self._partition_of(w), w) for w in await self._store.wallets_with_expired_holds(now)]
        wallet_ids = [wallet_id for tp, wallet_id in due if tp in self._epochs]
        if not wallet_ids:
            return 0
        (states, _), effects = await self._load(wallet_ids, now), BatchEffects()
        for wallet_id, state in states.items():
            events, swept = sweep(state, now)
            if swept is not None:
                effects.previous[wallet_id] = state
                effects.wallets[wallet_id] = swept
            for event in events:
                self._emit(effects, event)
        # The partitions' positions do not move; listing them makes the commit check their epochs.
        effects.offsets = {tp: self._positions[tp] for tp, _ in due if tp in self._positions}
        try:
            rows = await self._commit(effects)
        except Fenced:
            self._forget_wallets()
            return 0
        for wallet_id, state in effects.wallets.items():
            self._remember(wallet_id, state)
        await self._publish(rows)
        return len(effects.wallets)

    async def _commit(self, effects: BatchEffects) -> list[OutboxRow]:
        """Commit `effects`, recording as published what earlier batches' acks confirmed so far."""
        effects.published, self._published = self._published, []
        try:
            return await self._store.commit(effects, self._epochs)
        except BaseException:
            self._published = effects.published + self._published  # marked by the next commit instead
            raise

    def _partition_of(self, wallet_id: str) -> tuple[str, int]:
        """The auth.requests partition a wallet's messages land on (Kafka's default partitioner)."""
        assert self._consumer is not None  # noqa: S101 - start() runs first
        name = topic_name(Topic.AUTH_REQUESTS, self._settings.topic_prefix)
        count = len(self._consumer.partitions_for_topic(name) or ()) or self._settings.kafka_partitions
        return name, partition_for(wallet_id.encode(), count)

    async def claim(self, partitions: list[TopicPartition]) -> None:
        """New partitions: take a new epoch for each, seek to the offset kept in Postgres."""
        self._forget_wallets()  # another instance may have changed these wallets meanwhile
        claimed = await self._store.claim([(tp.topic, tp.partition) for tp in partitions])
        for (topic, partition), (next_offset, epoch) in claimed.items():
            self._epochs[(topic, partition)] = epoch
            self._positions[(topic, partition)] = next_offset
            assert self._consumer is not None  # noqa: S101 - claim only runs inside a started consumer
            self._consumer.seek(TopicPartition(topic, partition), next_offset)
        _log.info("partitions_claimed", partitions=sorted(f"{t}[{p}]@{e}" for (t, p), (_, e) in claimed.items()))

    def release(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away: forget their epochs and every cached wallet."""
        for tp in partitions:
            self._epochs.pop((tp.topic, tp.partition), None)
            self._positions.pop((tp.topic, tp.partition), None)
            self._suspects.pop((tp.topic, tp.partition), None)
            self._failed_once.pop((tp.topic, tp.partition), None)
        self._forget_wallets()

    async def process_batch(self) -> int:
        """Consume and decide one batch while the previous one commits, then commit it in the
        background (it publishes its rows itself once committed); return how many records it held.

        The batch is decided on the states the previous batch left (kept in the cache before they
        are committed). If that commit fails, or the cache was cleared meanwhile (a rebalance), the
        batch is thrown away and read again: nothing is decided on states that did not hold.
        """
        assert self._consumer is not None  # noqa: S101 - start() runs first
        if self._remembered > MAX_REMEMBERED_DECISIONS and await self._drain():
            self._evict_remembered()  # only with no commit in flight: evicted wallets are read again
        # While a failed batch is taken apart, one record at a time (see `_isolate`).
        max_records = 1 if self._suspects else BATCH_MAX_RECORDS
        batches = await self._consumer.getmany(timeout_ms=200, max_records=max_records)
        records = sorted(
            (record for tp_records in batches.values() for record in tp_records),
            key=lambda r: (r.timestamp, _TOPIC_ORDER[self._topics[r.topic]], r.partition, r.offset),
        )
        if not records:
            await self._drain()
            return 0
        generation = self._generation
        started = time.perf_counter()
        try:
            effects, new_states = await self._decide_batch(records)
        except Exception as error:  # noqa: BLE001 - sorted in _failed: Postgres away, or a message that cannot apply
            if await self._drain():
                await self._failed(batches, records, error)
            else:
                self._rewind(batches)
            return 0
        decided = time.perf_counter()
        if not await self._drain() or generation != self._generation:
            self._rewind(batches)  # decided on states that did not hold: read it again
            return 0
        for wallet_id, state in new_states.items():
            self._remember(wallet_id, state)  # the next batch is decided on these while this one commits
        task = asyncio.create_task(self._commit_and_publish(records, effects, started, decided))
        self._pending = _Pending(batches, records, effects, task)
        return len(records)

    async def _commit_and_publish(
        self, records: list[Record], effects: BatchEffects, started: float, decided: float
    ) -> None:
        """The background half of a batch: commit, then queue its rows for Kafka (in commit order:
        the next batch's commit starts only once this returns). Raises only if the commit failed.
        """
        begun = time.perf_counter()
        rows = await self._commit(effects)
        committed = time.perf_counter()
        self._advance(effects.offsets)
        await self._publish(rows)  # never raises: a failed send leaves the rows to the relay
        try:
            self._account(records, effects, {"decide": decided - started, "commit": committed - begun,
                                             "publish": time.perf_counter() - committed})  # fmt: skip
        except Exception as error:  # noqa: BLE001 - bookkeeping must not pass for a failed commit
            _log.error("batch_accounting_failed", error=_describe(error))

    def _account(self, records: list[Record], effects: BatchEffects, spent: dict[str, float]) -> None:
        """Stage times, counters and metrics of a committed batch."""
        for stage, seconds in spent.items():
            self.seconds_by_stage[stage] += seconds
            metrics.BATCH_SECONDS.labels(stage).observe(seconds)
        self.batches += 1
        self.records += len(records)
        self._measure(records, effects)
        _log.debug(
            "batch_done",
            records=len(records),
            waited_ms=round(time.time() * 1000 - records[0].timestamp, 2),  # the oldest record's age now
            **{f"{k}_ms": round(v * 1000, 2) for k, v in spent.items()},
        )

    async def _drain(self) -> bool:
        """Wait for the batch being committed, if any; False if its commit failed (it is then read
        again, and its caller reads again what it decided on that batch's states).
        """
        pending = self._pending
        if pending is None:
            return True
        try:
            await asyncio.shield(pending.task)  # a cancelled caller leaves the commit to finish (stop() waits)
        except asyncio.CancelledError:
            if not pending.task.done():
                raise
            self._pending = None
            self._rewind(pending.batches)
            return False
        except Exception as error:  # noqa: BLE001 - sorted in _failed
            self._pending = None
            await self._failed(pending.batches, pending.records, error)
            return False
        self._pending = None
        return True

    async def _failed(
        self, batches: dict[TopicPartition, list[Record]], records: list[Record], error: Exception
    ) -> None:
        """A batch could not be decided or committed: fenced (another instance has its partitions),
        Postgres away (read it again in a moment; fail closed meanwhile), or for good (`_isolate`).
        """
        if isinstance(error, Fenced):
            _log.warning("batch_fenced", error=str(error), records=len(records))
            self._forget_wallets()
        elif transient(error):
            _log.error("batch_commit_failed", error=str(error), records=len(records))
            self._rewind(batches)
            await asyncio.sleep(0.5)
        else:
            await self._isolate(batches, records, error)

    async def _isolate(
        self, batches: dict[TopicPartition, list[Record]], records: list[Record], error: Exception
    ) -> None:
        """A batch failed in a way that reading it again would repeat (a constraint or a value Postgres
        refuses, a bug a message triggers): rather than stop every wallet behind it, take it apart.
        Its records are read again one at a time; one that fails alone twice (the second time from a
        fresh load: a race with another instance resolves itself) is set aside.
        """
        self._rewind(batches)
        if len(records) > 1:
            for tp, tp_records in batches.items():
                at = (tp.topic, tp.partition)
                self._suspects[at] = max(self._suspects.get(at, 0), tp_records[-1].offset + 1)
            _log.error("batch_failed_isolating", error=_describe(error), records=len(records))
            return
        record = records[0]
        at = (record.topic, record.partition)
        if self._failed_once.get(at) != record.offset:
            self._failed_once[at] = record.offset
            _log.error("record_failed", error=_describe(error), topic=record.topic, offset=record.offset)
            return
        await self._set_aside(record, error)

    def _advance(self, offsets: dict[tuple[str, int], int]) -> None:
        """After a commit: move its partitions' positions (those still ours) and forget what `_isolate`
        noted for partitions whose position is now past it (or that went away).
        """
        self._positions.update({tp: offset for tp, offset in offsets.items() if tp in self._epochs})
        self._suspects = {at: end for at, end in self._suspects.items() if self._positions.get(at, end) < end}
        self._failed_once = {
            at: offset for at, offset in self._failed_once.items() if self._positions.get(at, offset + 1) <= offset
        }

    async def _set_aside(self, record: Record, error: Exception) -> None:
        """Commit `record` as consumed, to its topic's dead-letter twin with the error; a wallet command
        also gets its `command_rejected` reply (the caller is not left waiting). An authorization
        request gets no decision: the gateway declines it at its deadline (fail closed).
        """
        topic = self._topics[record.topic]
        effects = BatchEffects()
        effects.offsets[(record.topic, record.partition)] = record.offset + 1
        self._dead_letter(effects, record, f"could not be applied: {_describe(error)}")
        message = self._parse(record)
        if topic is Topic.WALLET_COMMANDS and not isinstance(message, InvalidMessage):
            reason = "could not be applied (an internal error); set aside on the dead-letter topic"
            self._emit(effects, rejection(message, self._clock(), reason))  # type: ignore[arg-type]
        try:
            rows = await self._commit(effects)
        except Fenced:
            self._forget_wallets()
            return
        except Exception as failure:  # noqa: BLE001 - Postgres away now: the record is read again
            _log.error("set_aside_failed", error=_describe(failure))
            await asyncio.sleep(0.5)
            return
        self._advance(effects.offsets)
        assert self._consumer is not None  # noqa: S101 - start() runs first
        self._consumer.seek(TopicPartition(record.topic, record.partition), record.offset + 1)  # was rewound
        _log.error("record_set_aside", topic=record.topic, offset=record.offset, error=_describe(error))
        await self._publish(rows)

    def _measure(self, records: list[Record], effects: BatchEffects) -> None:
        """Batch size, decisions by reason, their latency from arrival, and how far behind we are."""
        metrics.BATCH_RECORDS.observe(len(records))
        committed_ms = time.time() * 1000
        requests = self._requests_topic
        for record in records:
            if record.topic == requests:
                metrics.DECISION_AGE_SECONDS.observe(max(0.0, committed_ms - record.timestamp) / 1000)
        for reason, count in Counter(decision.reason.value for decision, _ in effects.decisions).items():
            metrics.DECISIONS.labels(reason).inc(count)
        consumer = self._consumer
        # How far behind we are: read from every assigned partition, so at most once a second.
        if consumer is not None and committed_ms - self._lag_measured_ms >= LAG_EVERY_MS:
            self._lag_measured_ms = committed_ms
            behind = 0
            for partition in consumer.assignment():
                end, position = (
                    consumer.highwater(partition),
                    self._positions.get((partition.topic, partition.partition)),
                )
                if end is not None and position is not None:
                    behind += max(0, end - position)
            metrics.CONSUMER_LAG.set(behind)

    async def _decide_batch(self, records: list[Record]) -> tuple[BatchEffects, dict[str, WalletState]]:
        parsed = [(record, self._parse(record)) for record in records]
        messages = [message for _, message in parsed if not isinstance(message, InvalidMessage)]
        now = self._clock()
        states, new_here = await self._load([m.wallet_id for m in messages], now)
        asked = [
            m.issuer_authorization_id
            for m in messages
            if isinstance(m, AuthorizationRequested) and not self._answer_would_be_in_memory(m, now)
        ]
        recalled = self._decisions_to_recall(messages, states)
        found = await self._store.load_decisions([*asked, *recalled])  # one query for both
        earlier: dict[str, Decided | AuthorizationDecided] = {a: found[a] for a in asked if a in found}
        _recollect(states, recalled, found, now)
        # A yield before the batch takes the CPU: the previous batch's commit sends its query, the
        # fetcher its next request. Without one, a batch that needs no query of its own is decided
        # before that commit even starts, and nothing overlaps (measured: ~25% fewer decisions/s).
        await asyncio.sleep(0)
        applied = await self._store.applied_events([m.event_id for m in messages if isinstance(m, _ISSUER_EVENTS)])
        creations = [m for m in messages if isinstance(m, CreateCard)]
        directory = (
            await self._store.card_directory(
                [m.card_id for m in creations], [(m.issuer.value, m.issuer_card_token) for m in creations]
            )
            if creations
            else CardDirectory()
        )
        seen = _Seen(earlier, applied, directory)
        if self._pending is not None:
            seen.include(self._pending.effects)  # committing now: not yet in the tables read above
        effects = BatchEffects(previous=dict(states))
        for record, message in parsed:
            effects.offsets[(record.topic, record.partition)] = record.offset + 1
            if isinstance(message, InvalidMessage):
                self._dead_letter(effects, record, message)
                continue
            if self._settled_without_deciding(message, effects, seen, now):
                continue
            before = states.get(message.wallet_id)
            events, state = decide(before, message, now, self._rates)
            effects.name(message.wallet_id, getattr(message, "issuer_authorization_id", None))
            if before is None:
                self._note_new_wallet(message, state, new_here)
            if state is not None:
                states[message.wallet_id] = state
                effects.wallets[message.wallet_id] = state
            for event in events:
                if isinstance(event, CardCreated):  # a later creation in this batch sees it taken
                    seen.directory.add_created(event)
                self._emit(effects, event, state)
        return effects, {wallet_id: states[wallet_id] for wallet_id in effects.wallets}

    def _decisions_to_recall(self, messages: list[Inbound], states: dict[str, WalletState]) -> dict[str, str]:
        """A refund, or a capture whose hold is gone, is counted against the trace (and at the
        exchange) of the authorization's decision; so is a reversal, capture or refund, hold or not,
        in a currency the rate table can no longer convert (`_scaled_by_its_decision`). The wallet
        remembers that decision only if this instance made it since loading the wallet. Otherwise
        (a restart, a rebalance, an eviction, a decision older than the memory) it is read from
        Postgres into the wallet's memory first: the money then lands on the same trace, at the same
        exchange, whichever instance applies the event, and on a replay. These are the authorization
        ids to read, with their wallets.
        """
        wanted: dict[str, str] = {}
        for message in messages:
            # And our deadline's expiry of a request not held: if it was an approved increment, the
            # hold it grew shrinks back (lifecycle `_undo_increment`), which its decision says.
            ours = isinstance(message, AuthorizationExpired) and message.cause == "gateway_deadline"
            if not (ours or isinstance(message, _NAMING_AN_AUTHORIZATION)):
                continue
            authorization_id = getattr(message, "issuer_authorization_id", None)
            if not authorization_id:
                continue
            state = states.get(message.wallet_id)
            if state is None or authorization_id in state.decisions:
                continue  # nothing to count against, or remembered
            held = authorization_id in state.holds
            if held and (ours or not self._scaled_by_its_decision(message, state)):
                continue  # the hold says it all
            if not held and isinstance(message, AuthorizationReversed):
                continue  # nothing held to release
            wanted[authorization_id] = message.wallet_id
        return wanted

    def _scaled_by_its_decision(self, message: Inbound, state: WalletState) -> bool:
        """An amount in another currency that the rate table cannot convert (a rate removed since
        the authorization) is counted at the authorization's own exchange, which only its decision
        knows (`lifecycle._in_wallet_currency`).
        """
        amount = None if getattr(message, "full", False) else getattr(message, "amount", None)
        return (
            amount is not None
            and amount.currency != state.currency
            and self._rates.convert_up(amount, state.currency) is None
        )

    def _settled_without_deciding(self, message: Inbound, effects: BatchEffects, seen: _Seen, now: datetime) -> bool:
        """True when `message` needs no decision: a request answered before (the first answer again),
        an issuer event applied before, a card whose id or token another card holds (rejected).
        """
        if isinstance(message, AuthorizationRequested) and message.issuer_authorization_id in seen.earlier:
            self._emit(effects, seen.earlier[message.issuer_authorization_id])
            return True
        if isinstance(message, _ISSUER_EVENTS):
            if message.event_id in seen.applied:
                _log.info("issuer_event_duplicate", event_id=str(message.event_id), type=message.type)
                return True
            seen.applied.add(message.event_id)
            effects.applied_events.append((message.event_id, message.wallet_id))
        if isinstance(message, CreateCard):
            conflict = seen.directory.conflict(
                message.wallet_id, message.card_id, message.issuer.value, message.issuer_card_token
            )
            if conflict is not None:
                self._emit(effects, rejection(message, now, conflict))
                return True
        return False

    def _parse(self, record: Record) -> Inbound | InvalidMessage:
        topic = self._topics[record.topic]
        try:
            message = parse(topic, record.value or b"")
        except InvalidMessage as error:
            return error
        if record.key != message_key(message):
            # A message on the wrong partition would break the one-writer-per-wallet rule.
            return InvalidMessage.because(topic, f"key {record.key!r} is not the wallet id {message.wallet_id!r}")
        return message  # type: ignore[return-value]

    def _emit(self, effects: BatchEffects, event: Outbound, state: WalletState | None = None) -> None:
        topic = self._output_topics[event.type]
        if isinstance(event, Decided):  # a decision just made carries its JSON (the hot path)
            effects.name(event.wallet_id, event.issuer_authorization_id)
            if event.request.increment_of is not None:  # an increment grows its authorization's hold
                effects.name(event.wallet_id, event.request.increment_of)
            effects.add_decision(event, event.payload, topic, event.event_id_text, event.text)
            return
        effects.name(event.wallet_id, getattr(event, "issuer_authorization_id", None))  # an expiry, say
        if isinstance(event, AuthorizationDecided):  # repeated: from memory or Postgres
            # The state keeps each decision's JSON: reuse it rather than serialize it again.
            remembered = None if state is None else state.decisions.get(event.issuer_authorization_id)
            payload = remembered[1] if remembered is not None else serialize(event)
            effects.add_decision(event, payload, topic, str(event.event_id))
            return
        if isinstance(event, WalletCreated | CardCreated | StatusChanged):
            effects.directory.append(event)
        effects.outbox.append((topic, event.wallet_id, str(event.event_id), serialize(event)))

    def _dead_letter(self, effects: BatchEffects, record: Record, error: InvalidMessage | str) -> None:
        """Bad input goes to the topic's dead-letter twin with the error; the consumer goes on."""
        payload = dead_letter_payload(record, error)
        topic = topic_name(self._topics[record.topic], self._settings.topic_prefix, dead_letter=True)
        metrics.DEAD_LETTERS.labels(self._topics[record.topic].value).inc()
        key = (record.key or b"").decode("utf-8", errors="replace")
        effects.outbox.append((topic, key, str(_dead_letter_id(record)), json.dumps(payload).encode()))
        _log.warning(
            "message_dead_lettered", topic=record.topic, offset=record.offset, error=str(error).splitlines()[0]
        )

    def _answer_would_be_in_memory(self, request: AuthorizationRequested, now: datetime) -> bool:
        """True when any earlier decision for `request` must be in the cached wallet's memory, so
        Postgres need not be asked: the wallet was loaded before the request was made (every decision
        since went through this cache, partitions being ours alone) and the decision cannot have been
        pruned yet. Clocks may disagree by up to CLOCK_SKEW.

        Assumption: `requested_at` is the gateway's time of the attempt that published the request,
        so a retry carries a later time than the first attempt; the rule holds while an issuer's
        retries of one authorization come within CLOCK_SKEW of its first attempt (Stripe and Lithic
        take a default decision after a few seconds and do not ask again). A retry much later than
        that, first decided before this instance loaded the wallet, would be decided again.
        """
        loaded_at = self._loaded_at.get(request.wallet_id)
        return (
            loaded_at is not None
            and request.wallet_id in self._cache
            and request.requested_at > loaded_at + CLOCK_SKEW
            and now - request.requested_at < MEMORY_HORIZON - CLOCK_SKEW
        )

    async def _load(self, wallet_ids: list[str], now: datetime) -> tuple[dict[str, WalletState], set[str]]:
        """The cached or persisted state of each wallet that exists, and the ids of those that do
        not exist and were never decided for (see `_note_new_wallet`).
        """
        missing = sorted({w for w in wallet_ids if w not in self._cache})
        loaded = await self._store.load_wallets(missing, now) if missing else {}
        for wallet_id, state in loaded.items():
            self._remember(wallet_id, state)
            self._loaded_at[wallet_id] = now
        absent = [w for w in missing if w not in loaded]
        if absent and self._pending is not None:  # a decision committing now is not in the table yet
            decided_now = {decision.wallet_id for decision, _ in self._pending.effects.decisions}
            absent = [w for w in absent if w not in decided_now]
        new_here = await self._store.never_decided(absent) if absent else set()
        return {w: self._cache[w] for w in set(wallet_ids) if w in self._cache}, new_here

    def _note_new_wallet(self, message: Inbound, state: WalletState | None, new_here: set[str]) -> None:
        """A wallet created here, that had never existed nor been decided for, has every decision of
        its life in this cache while it stays there (its partition is ours alone): its requests need
        not ask Postgres for earlier decisions (`_answer_would_be_in_memory`). A request decided
        while it did not exist (a decline not kept in any state) takes that away.
        """
        if state is None:
            new_here.discard(message.wallet_id)  # decided for, with no state to remember it in
        elif message.wallet_id in new_here:
            self._loaded_at[message.wallet_id] = NEVER_LOADED

    def _forget_wallets(self) -> None:
        self._cache.clear()
        self._loaded_at.clear()
        self._remembered = 0
        self._generation += 1  # a batch decided on the cache as it was must not commit

    def _remember(self, wallet_id: str, state: WalletState) -> None:
        before = self._cache.get(wallet_id)
        self._remembered += len(state.decisions) - (0 if before is None else len(before.decisions))
        self._cache[wallet_id] = state
        self._cache.move_to_end(wallet_id)
        while len(self._cache) > MAX_CACHED_WALLETS:
            self._evict_oldest()

    def _evict_remembered(self) -> None:
        """Evict the least recently used wallets until their decisions fit the budget again, with
        room for a while (to a fraction of it), so that a busy wallet is not read again every batch.
        """
        evicted = 0
        while self._cache and self._remembered > MAX_REMEMBERED_DECISIONS * 3 // 4:
            self._evict_oldest()
            evicted += 1
        _log.info("wallets_evicted", wallets=evicted, decisions_remembered=self._remembered)

    def _evict_oldest(self) -> None:
        wallet_id, state = self._cache.popitem(last=False)
        self._remembered -= len(state.decisions)
        self._loaded_at.pop(wallet_id, None)

    def _rewind(self, batches: dict[TopicPartition, list[Record]]) -> None:
        assert self._consumer is not None  # noqa: S101 - start() runs first
        for tp in batches:
            position = self._positions.get((tp.topic, tp.partition))
            if position is not None:
                self._consumer.seek(tp, position)
        self._forget_wallets()

    async def _publish(self, rows: list[OutboxRow]) -> None:
        """Queue committed rows in order; their acks are awaited in the background (the next batch
        runs meanwhile) and they are marked published by the next commit. On failure they stay
        unpublished in the outbox, for the relay.
        """
        assert self._producer is not None  # noqa: S101 - start() runs first
        if not rows or self._publish_failed:
            # While publishing is broken the rows wait in the outbox; the recovery relays them in order.
            # (Sending through a producer whose start failed would wait forever: aiokafka #759.)
            return
        try:
            async with asyncio.timeout(self._send_timeout_s):
                acks = await send_in_batches(self._producer, [(row.topic, row.key, row.payload) for row in rows])
        except Exception as error:  # noqa: BLE001 - any publish failure leaves the rows for the relay, logged
            _log.error("publish_failed", error=str(error), rows=len(rows))
            self._publish_failed = True
            return
        metrics.OUTBOX_IN_FLIGHT.inc(len(rows))
        task = asyncio.create_task(self._confirm(rows, acks))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirmed(self) -> None:
        """Wait until every queued send is acknowledged or has failed."""
        if self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)

    async def _confirm(self, rows: list[OutboxRow], acks: list[asyncio.Future[object]]) -> None:
        # Bounded: an acknowledgement that never comes (a producer left stuck by a broker restart)
        # must not leave its rows unpublished until the next restart; past the bound they count as
        # failed and the loop relays them again with a new producer (consumers take repeats).
        try:
            await _acknowledged(acks, self._send_timeout_s)
        except Exception as error:  # noqa: BLE001 - as above: the rows stay for the relay
            _log.error("publish_failed", error=str(error), rows=len(rows))
            self._publish_failed = True
            return
        finally:
            metrics.OUTBOX_IN_FLIGHT.dec(len(rows))
        self._published += [row.outbox_id for row in rows]

    async def _recover_publishing(self) -> None:
        """After a failed publish: a new producer (an idempotent one can be left unusable by a broker
        restart, OutOfOrderSequenceNumber), then the outbox's unpublished rows again, in order.
        Until it succeeds, decisions are committed and wait in the outbox (the gateway declines at
        its deadline meanwhile: fail closed).
        """
        await self._confirmed()
        if self._producer is not None:
            await self._stop_producer(self._producer)
        try:
            # Only a started one replaces it (`start_producer`); until then `_publish` sends nothing,
            # `_publish_failed` being set, and the next try makes another.
            self._producer = await start_producer(self._settings)
        except Exception as error:  # noqa: BLE001 - the broker is still away: try again after the next batch
            _log.warning("publish_recovery_failed", error=str(error)[:300])
            await asyncio.sleep(0.5)
            return
        self._publish_failed = False
        try:
            await self._relay_unpublished()
        except Exception as error:  # noqa: BLE001 - Postgres away: the rows stay; try again after the next batch
            _log.warning("publish_recovery_failed", error=str(error)[:300])
            self._publish_failed = True
            await asyncio.sleep(0.5)
        else:
            if not self._publish_failed:
                _log.info("publishing_recovered")

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        """Stop a producer being replaced, for at most the send bound (it may hold unsendable batches)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._send_timeout_s):
                await producer.stop()

    async def _relay_stranded(self) -> None:
        """Publish outbox rows left unpublished past `STRANDED_AFTER`, after recording what this
        instance has published (so that only rows nobody is sending are sent again). Consumers take
        repeats; if Postgres or Kafka fails meanwhile, the rows wait for the next look.
        """
        if self._publish_failed or not await self._drain():
            return
        await self._confirmed()
        try:
            if self._published:
                await self._store.mark_published(self._published)
                self._published = []
            await self._relay_unpublished(STRANDED_AFTER)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            _log.warning("stranded_rows_kept", error=_describe(error))

    async def _relay_unpublished(self, older_than: timedelta = timedelta(0)) -> None:
        """Publish what was committed but not sent (a crash between the two), committed at least
        `older_than` ago.
        """
        while rows := await self._store.unpublished(older_than=older_than):
            await self._publish(rows)
            await self._confirmed()
            if not self._published:
                return  # Kafka refused them: the next start tries again
            await self._store.mark_published(self._published)
            self._published = []
            _log.info("outbox_relayed", rows=len(rows))


async def _acknowledged(acks: list[asyncio.Future[object]], timeout_s: float) -> None:
    """Wait for every ack; raise the first send's error, or TimeoutError past `timeout_s` (the
    sends themselves are not cancelled).

    Acks come a produce request at a time, in order: waiting on each in turn, only those still
    pending get a waiter (`asyncio.wait` on all of them put a callback on every one: ~2 µs per
    decision, decision 0005).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for ack in acks:
        if not ack.done():
            await asyncio.wait((ack,), timeout=max(0.0, deadline - loop.time()))
            if not ack.done():
                late = sum(not other.done() for other in acks)
                raise TimeoutError(f"{late} of {len(acks)} acknowledgements not in {timeout_s:.0f} s")
    for ack in acks:
        ack.result()  # the first send's error, if any


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:500]}"


def _dead_letter_id(record: Record) -> str:
    return str(derived_id("dead-letter", record.topic, record.partition, record.offset))


class _Claimer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Claims partitions (new epoch, seek) on assignment; forgets them on revocation."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._authorizer.release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._authorizer.claim(list(assigned))


def _recollect(
    states: dict[str, WalletState], recalled: dict[str, str], found: dict[str, AuthorizationDecided], now: datetime
) -> None:
    """The decisions read back for `recalled` (authorization id → wallet id) into their wallets' memory."""
    for authorization_id, wallet_id in recalled.items():
        decision = found.get(authorization_id)
        if decision is not None and decision.wallet_id == wallet_id:
            states[wallet_id] = recollect(states[wallet_id], decision, now)
