"""What the native-mode Azure clients share: a person's token as a credential, the raw
bodies of what ARM sent, bounded long-running-operation polling, and one translation of
every Azure failure into :class:`~jitaccess.domain.native.ExternalLookupFailed` (or
:class:`~jitaccess.domain.native.SignInLapsed` for a person's rejected token).

The Azure SDK's management packages are imported where they are used, never when this
module is imported: the process imports native mode's clients before it needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from jitaccess.domain.native import ExternalLookupFailed, SignInLapsed
from jitaccess.providers.arm import error_code, error_message, shorten

if TYPE_CHECKING:
    from azure.core.credentials import TokenRequestOptions
    from azure.core.pipeline import PipelineResponse

T = TypeVar("T")
#: Longest message text of Azure's kept in an error (it is shown to people).
_MAX_DETAIL = 240
#: A person's access token is taken as valid this long: ARM says when it is not (401).
_ASSUMED_LIFETIME = 600


class UserTokenCredential:
    """A ``TokenCredential`` that hands out one person's ARM access token, obtained by
    their sign-in (msal). It never refreshes: a token ARM refuses is a lapsed sign-in.
    The token is never shown (``repr`` hides it)."""

    def __init__(self, access_token: str) -> None:
        if not access_token:
            raise SignInLapsed("there is no Azure sign-in to act with: sign in again")
        self._token = access_token

    def _expires_on(self) -> int:
        return int(time.time()) + _ASSUMED_LIFETIME

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, self._expires_on())

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, self._expires_on())

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "UserTokenCredential(<hidden>)"


class Capture(Generic[T]):
    """A ``raw_response_hook`` that reads the body of every successful answer of one
    call (each page of a list) with ``read``, as it arrives: a malformed answer fails
    the call there, before the SDK's lenient models see it."""

    def __init__(self, read: Callable[[bytes], T]) -> None:
        self._read = read
        self.results: list[T] = []

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        http = response.http_response
        if 200 <= http.status_code < 300:
            self.results.append(self._read(http.body()))

    def last(self, call: str) -> T:
        if not self.results:
            raise ExternalLookupFailed(f"{call}: Azure sent no answer to read")
        return self.results[-1]


def raw_body(response: PipelineResponse[Any, Any], _deserialized: Any, _headers: Any) -> bytes:
    """A ``cls`` for SDK calls: the body ARM sent, not the SDK's model of it."""
    body: bytes = response.http_response.body()
    return body


def bounded_polling(
    call: str, interval: float, limit: float, *, final_state_via: str | None = None
) -> Any:
    """azure-mgmt-core's ``ARMPolling`` for one long-running operation that gives up
    (:class:`ExternalLookupFailed`) once ``limit`` seconds have passed, so a stuck
    operation cannot hold a caller forever."""
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    deadline = time.monotonic() + limit

    class BoundedPolling(ARMPolling):
        def update_status(self) -> None:
            if time.monotonic() > deadline:
                raise ExternalLookupFailed(
                    f"{call}: Azure's operation did not finish within {limit:.0f} seconds"
                )
            super().update_status()

    options = {"final-state-via": final_state_via} if final_state_via else None
    return BoundedPolling(interval, lro_options=options)


@contextmanager
def guarded(call: str, *, as_user: bool = False, forbidden: str | None = None) -> Iterator[None]:
    """Run one call to Azure; whatever goes wrong becomes a failed lookup naming ``call``.

    ``as_user``: the call carries a person's token, so a 401 means their sign-in has
    lapsed (:class:`SignInLapsed`). ``forbidden``: what a 403 means for this call."""
    try:
        yield
    except ExternalLookupFailed:
        raise
    except HttpResponseError as err:
        status = err.status_code
        if status == 401 and as_user:
            raise SignInLapsed(
                f"{call}: Azure did not accept your sign-in (401): sign in again"
            ) from None
        if status == 403 and forbidden:
            raise ExternalLookupFailed(f"{call}: {forbidden} (403 {error_code(err)})") from None
        if status is None:
            raise ExternalLookupFailed(f"{call}: {shorten(err.message, _MAX_DETAIL)}") from None
        if 200 <= status < 300:  # a long-running operation that ended Failed or Canceled
            raise ExternalLookupFailed(
                f"{call}: Azure's operation did not succeed: {error_code(err)}: "
                f"{error_message(err, _MAX_DETAIL)}"
            ) from None
        raise ExternalLookupFailed(
            f"{call}: Azure answered {status} {error_code(err)}: {error_message(err, _MAX_DETAIL)}"
        ) from None
    except ServiceResponseError as err:
        raise ExternalLookupFailed(
            f"{call}: Azure did not answer in time or broke the connection ({type(err).__name__})"
        ) from None
    except ServiceRequestError as err:
        raise ExternalLookupFailed(
            f"{call}: Azure could not be reached ({type(err).__name__})"
        ) from None
    except AzureError as err:
        raise ExternalLookupFailed(f"{call}: {shorten(err.message, _MAX_DETAIL)}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ExternalLookupFailed(
            f"{call}: Azure's answer could not be read ({type(err).__name__})"
        ) from None
