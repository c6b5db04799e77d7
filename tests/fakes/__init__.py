"""Local fake servers for provider tests: the fake Azure Resource Manager (which lives in
``jitaccess_sandbox.fake_arm``, re-exported here) and a webhook receiver."""
