"""The gateway service: the HTTP edge: issuer webhooks and the management API; never decides."""
