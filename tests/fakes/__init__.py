"""Local fake servers for provider tests: a fake Azure Resource Manager and a webhook receiver."""
