"""Plumbing every service shares (settings, logging, Kafka, Postgres, health); never business rules."""
