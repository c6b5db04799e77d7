"""jitaccess: just-in-time privileged access for managed applications, run from Slack."""

__version__ = "0.1.0"
