"""The producers' partitioner remembers key hashes, and puts every message where Kafka's default
partitioner (aiokafka's, the Java client's) would: one partition per wallet is what keeps each
wallet's log in order.
"""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.platform.kafka import KeyHashPartitioner, partition_for

pytestmark = pytest.mark.unit


def test_keys_land_where_the_default_partitioner_puts_them() -> None:
    """For many keys and partition counts, asked once and again, the same partition as aiokafka's."""
    ours, theirs = KeyHashPartitioner(), DefaultPartitioner()
    keys = [f"wal_{index}".encode() for index in range(2_000)] + [b"", "wallet-é".encode(), b"\x00\xff" * 40]
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        expected = [theirs(key, partitions, partitions) for key in keys]
        assert [ours(key, partitions, partitions) for key in keys] == expected
        assert [ours(key, partitions, partitions) for key in keys] == expected  # remembered this time
        assert [partition_for(key, count) for key in keys] == expected


def test_a_keyless_message_goes_to_one_of_the_available_partitions() -> None:
    """No key: any available partition, as aiokafka chooses."""
    assert KeyHashPartitioner()(None, [0, 1, 2], [2]) == 2
