"""The Slack adapter: Block Kit rendering, Bolt listeners and outbox delivery."""
