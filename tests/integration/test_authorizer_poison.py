"""One wallet's command must never stop the others: a card whose id or issuer token another card
holds is rejected with the reason, and a record whose commit Postgres refuses for good (a constraint,
a value) is taken apart from its batch and set aside, with its reply, while the rest is applied.
Found by the management API's fuzzing: two cards with one Stripe token stalled every wallet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from schemas.common import Issuer
from schemas.topics import Topic
from schemas.wallet import CommandRejected, CreateCard, CreateWallet
from services.authorizer.runtime import Authorizer
from services.platform.settings import Settings
from tests.support.kafka_io import Collector, apply_commands
from tests.support.services import running_authorizer


@pytest.fixture
async def authorizer(kafka_topics: Settings, pool: asyncpg.Pool) -> AsyncIterator[Authorizer]:
    """One authorizer instance running in the test's event loop."""
    async with running_authorizer(kafka_topics, pool) as running:
        yield running


def _fields(wallet_id: str) -> dict[str, Any]:
    return {"command_id": uuid.uuid4(), "wallet_id": wallet_id, "actor": "ops", "issued_at": datetime.now(UTC)}


def _card(wallet_id: str, card_id: str, token: str) -> CreateCard:
    return CreateCard(
        **_fields(wallet_id), card_id=card_id, issuer=Issuer.STRIPE, issuer_card_token=token, last4="4242"
    )


def _outcomes(events: list[Any], commands: list[Any]) -> list[str]:
    by_command = {event.command_id: event for event in events}
    return [
        f"rejected: {reply.error}" if isinstance(reply, CommandRejected) else reply.type
        for reply in (by_command[command.command_id] for command in commands)
    ]


@pytest.mark.usefixtures("authorizer")
async def test_a_card_id_or_token_another_card_holds_is_rejected_and_the_rest_applies(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """In one batch and across batches, across wallets and within one."""
    wallets = [CreateWallet(**_fields(w)) for w in ("wal_a", "wal_b")]
    await apply_commands(kafka_topics, [*wallets, _card("wal_a", "card_a1", "ic_shared")])
    commands = [
        _card("wal_b", "card_b1", "ic_shared"),  # token of wal_a's card (committed earlier)
        _card("wal_b", "card_a1", "ic_other"),  # card id of wal_a's card
        _card("wal_a", "card_a2", "ic_shared"),  # the token again, in the same wallet
        _card("wal_b", "card_b3", "ic_b3"),
        # One token, two wallets, one batch: the wallets' logs are not ordered with each other, so
        # whichever comes first gets it and the other is rejected.
        _card("wal_b", "card_b2", "ic_new"),
        _card("wal_a", "card_a3", "ic_new"),
    ]
    events = await apply_commands(kafka_topics, commands)
    outcomes = _outcomes(events, commands)
    assert outcomes[:4] == [
        "rejected: stripe card token ic_shared is already another card's",
        "rejected: card id card_a1 is already used by another wallet",
        "rejected: stripe card token ic_shared is already another card's",
        "card_created",
    ]
    assert sorted(outcomes[4:]) == ["card_created", "rejected: stripe card token ic_new is already another card's"]
    rows = await pool.fetch("SELECT card_id, wallet_id, issuer_card_token FROM authorizer.cards ORDER BY card_id")
    winner = ("card_b2", "wal_b") if outcomes[4] == "card_created" else ("card_a3", "wal_a")
    assert sorted(tuple(row) for row in rows) == sorted(
        [("card_a1", "wal_a", "ic_shared"), ("card_b3", "wal_b", "ic_b3"), (*winner, "ic_new")]
    )


@pytest.mark.usefixtures("authorizer")
async def test_a_record_postgres_refuses_is_set_aside_with_its_reply_and_its_batch_applies(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A real refusal: a trigger raising check_violation for one wallet id, as a constraint would."""
    await pool.execute(
        """CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.wallet_id = 'wal_refused' THEN
               RAISE EXCEPTION 'wallet refused by the test' USING ERRCODE = 'check_violation';
             END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER refuse BEFORE INSERT ON authorizer.wallets FOR EACH ROW EXECUTE FUNCTION refuse_for_test();"""
    )
    commands = [CreateWallet(**_fields(w)) for w in ("wal_1", "wal_2", "wal_refused", "wal_3", "wal_4")]
    async with Collector(kafka_topics, Topic.WALLET_COMMANDS, dead_letter=True) as dead:
        events = await apply_commands(kafka_topics, commands)
        letters = await dead.wait_for(lambda items: len(items) >= 1)
    reasons = _outcomes(events, commands)
    assert reasons[:2] + reasons[3:] == ["wallet_created"] * 4
    assert reasons[2] == "rejected: could not be applied (an internal error); set aside on the dead-letter topic"
    letter = json.loads(letters[0])
    assert (letter["key"], letter["error"]) == (
        "wal_refused",
        "could not be applied: CheckViolationError: wallet refused by the test",
    )
    assert json.loads(letter["value"])["command_id"] == str(commands[2].command_id)
    rows = await pool.fetch("SELECT wallet_id FROM authorizer.wallets ORDER BY wallet_id")
    assert [row["wallet_id"] for row in rows] == ["wal_1", "wal_2", "wal_3", "wal_4"]
    # The wallets after it are served as usual: the next command is applied at once.
    card = _card("wal_4", "card_4", "ic_4")
    assert _outcomes(await apply_commands(kafka_topics, [card]), [card]) == ["card_created"]
