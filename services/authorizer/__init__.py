"""The authorizer service: decides every authorization from in-memory wallet state; Postgres is the source of truth."""
