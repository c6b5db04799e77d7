"""The fake Microsoft identity platform and Graph ship with the sandbox
(``jitaccess_sandbox.fake_entra``); tests import them from here, like the fake ARM."""

from jitaccess_sandbox.fake_entra import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TENANT_ID,
    Callback,
    FakeEntra,
)

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI", "TENANT_ID", "Callback", "FakeEntra"]
