"""Contracts every service agrees on: money, events, commands, topics, and the SQL migrations."""
