"""Test support: where the real Kafka and Postgres come from, and per-test isolation helpers."""
