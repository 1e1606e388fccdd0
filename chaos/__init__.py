"""The seeded chaos run: the real services under a storm of traffic and faults, judged by an oracle."""
