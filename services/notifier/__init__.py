"""The notifier service: Slack approval requests and the Approve/Deny clicks; never decides an authorization."""
