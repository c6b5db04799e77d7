"""Local fake servers for provider tests: the fake Azure Resource Manager and the fake
Microsoft identity platform with Graph (which live in ``jitaccess_sandbox.fake_arm`` and
``jitaccess_sandbox.fake_entra``, re-exported here) and a webhook receiver."""
