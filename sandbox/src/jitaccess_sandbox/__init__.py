"""Local sandbox helpers (fake Slack Web API and friends)."""
