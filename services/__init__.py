"""The pursestrings services: gateway, authorizer, ledger, notifier, and their shared platform."""
