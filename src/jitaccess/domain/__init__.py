"""The pure core: rules and the request lifecycle. No Slack, SQL or clock in here."""
