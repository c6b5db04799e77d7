"""Every setting the service reads, from the environment (and ``.env``)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal
from urllib.parse import urlsplit

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jitaccess.roles import Role

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Conditional Access authentication context ids: c1 to c99.
AUTH_CONTEXT = re.compile(r"c[1-9][0-9]?")
#: Settings whose value is a secret: a report of a bad one never repeats it.
SECRET_SETTINGS = frozenset(
    {
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "azure_client_secret",
        "entra_client_secret",
        "token_keys",
    }
)
#: What settings checked by a validator accept, in words.
ACCEPTS = {
    "token_keys": "comma-separated Fernet keys (make one with `jitaccess signins new-key`)",
    "mfa_auth_context": "a Conditional Access authentication context id, c1 to c99",
    "entra_authority": "https://<login host>/<tenant id or domain>, e.g. "
    "https://login.microsoftonline.com/<tenant-id>",
    "public_url": "an absolute http(s):// URL without a query",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///./jitaccess.db",
        validation_alias="JITACCESS_DATABASE_URL",
        description="SQLAlchemy URL; SQLite (one process) or postgresql:// (teams, replicas)",
    )
    role: Role = Field(
        default=Role.ALL,
        validation_alias="JITACCESS_ROLE",
        description="What serve runs: web (Slack only), worker (sweep, relay, reconcile) or all",
    )
    sweep_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="JITACCESS_SWEEP_INTERVAL_SECONDS",
        description="How often the deadline sweep runs even when no deadline is known",
    )
    sweep_batch_size: int = Field(
        default=500,
        gt=0,
        validation_alias="JITACCESS_SWEEP_BATCH_SIZE",
        description="Requests handled per sweep transaction",
    )
    provider_concurrency: int = Field(
        default=32,
        gt=0,
        le=256,
        validation_alias="JITACCESS_PROVIDER_CONCURRENCY",
        description="Backend calls in flight at once per provider during a sweep "
        "(a provider may declare a lower limit of its own)",
    )
    relay_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        validation_alias="JITACCESS_RELAY_INTERVAL_SECONDS",
        description="How often the outbox relay delivers queued notifications",
    )
    retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="JITACCESS_RETRY_BASE_SECONDS",
        description="First backoff delay after a failed grant or revoke",
    )
    retry_cap_seconds: float = Field(
        default=300.0,
        gt=0,
        validation_alias="JITACCESS_RETRY_CAP_SECONDS",
        description="Longest backoff delay between provider retries",
    )
    grant_max_attempts: int = Field(
        default=5,
        ge=1,
        validation_alias="JITACCESS_GRANT_MAX_ATTEMPTS",
        description="Failed grant attempts before a request becomes failed",
    )
    remind_before_minutes: float = Field(
        default=15.0,
        ge=0,
        validation_alias="JITACCESS_REMIND_BEFORE_MINUTES",
        description="Remind the requester this long before access ends (0: never)",
    )
    activity_summary_delay_minutes: float = Field(
        default=15.0,
        ge=0,
        validation_alias="JITACCESS_ACTIVITY_SUMMARY_DELAY_MINUTES",
        description="After Azure access ends, wait this long (the Activity Log lags) before "
        "summarising what the publisher did",
    )
    activity_summary_max_attempts: int = Field(
        default=6,
        ge=0,
        validation_alias="JITACCESS_ACTIVITY_SUMMARY_MAX_ATTEMPTS",
        description="Failed Activity Log reads before the summary is given up (0: no summaries)",
    )
    host: str = Field(
        default="0.0.0.0",
        validation_alias="JITACCESS_HOST",
        description="Address the HTTP server listens on",
    )
    port: int = Field(
        default=3000,
        ge=0,
        le=65535,
        validation_alias="JITACCESS_PORT",
        description="Port for /slack/events, /healthz, /readyz and /metrics",
    )
    http_threads: int = Field(
        default=8,
        ge=1,
        validation_alias="JITACCESS_HTTP_THREADS",
        description="Worker threads of the HTTP server",
    )
    slack_bot_token: str | None = Field(
        default=None,
        validation_alias="SLACK_BOT_TOKEN",
        description="Bot token (xoxb-…) from the Slack app's OAuth & Permissions page",
    )
    slack_signing_secret: str | None = Field(
        default=None,
        validation_alias="SLACK_SIGNING_SECRET",
        description="Signing secret from the Slack app's Basic Information page",
    )
    slack_app_token: str | None = Field(
        default=None,
        validation_alias="SLACK_APP_TOKEN",
        description="App-level token (xapp-…) with connections:write: enables Socket Mode",
    )
    slack_api_url: str | None = Field(
        default=None,
        validation_alias="SLACK_API_URL",
        description="Base URL of the Slack Web API (default Slack's own; tests use a fake)",
    )
    azure_tenant_id: str | None = Field(
        default=None,
        validation_alias="AZURE_TENANT_ID",
        description="Entra tenant of the identity jitaccess uses for Azure role assignments",
    )
    azure_client_id: str | None = Field(
        default=None,
        validation_alias="AZURE_CLIENT_ID",
        description="Client (application) ID of that identity",
    )
    azure_client_secret: str | None = Field(
        default=None,
        validation_alias="AZURE_CLIENT_SECRET",
        description="Client secret; leave empty to use DefaultAzureCredential (managed identity)",
    )
    azure_authority_host: str | None = Field(
        default=None,
        validation_alias="AZURE_AUTHORITY_HOST",
        description="Entra host jitaccess's own Azure identity gets its tokens from "
        "(default login.microsoftonline.com; login.microsoftonline.us for Azure Government)",
    )
    azure_arm_url: str | None = Field(
        default=None,
        validation_alias="AZURE_ARM_URL",
        description="Azure Resource Manager endpoint (default the public cloud's)",
    )
    azure_ca_bundle: str | None = Field(
        default=None,
        validation_alias="AZURE_CA_BUNDLE",
        description="CA bundle to trust for Azure Resource Manager (default the system's)",
    )
    public_url: str | None = Field(
        default=None,
        validation_alias="JITACCESS_PUBLIC_URL",
        description="Where people's browsers reach jitaccess's web role (the sign-in callback "
        "is {public_url}/auth/callback)",
    )
    entra_authority: str | None = Field(
        default=None,
        validation_alias="ENTRA_AUTHORITY",
        description="Sign in with Microsoft: https://login.microsoftonline.com/<tenant-id> "
        "(the customer's tenant); empty disables sign-in",
    )
    entra_client_id: str | None = Field(
        default=None,
        validation_alias="ENTRA_CLIENT_ID",
        description="The app registration people sign in to (delegated user_impersonation "
        "on Azure Service Management)",
    )
    entra_client_secret: str | None = Field(
        default=None,
        validation_alias="ENTRA_CLIENT_SECRET",
        description="Client secret of that app registration (ENTRA_CLIENT_ID)",
    )
    entra_ca_bundle: str | None = Field(
        default=None,
        validation_alias="ENTRA_CA_BUNDLE",
        description="CA bundle to trust for Entra (sign-in, jitaccess's own tokens) and Graph "
        "(default the system's)",
    )
    graph_url: str | None = Field(
        default=None,
        validation_alias="GRAPH_URL",
        description="Microsoft Graph endpoint, with its version (default "
        "https://graph.microsoft.com/v1.0)",
    )
    token_keys: str | None = Field(
        default=None,
        validation_alias="JITACCESS_TOKEN_KEYS",
        description="Comma-separated Fernet keys encrypting stored refresh tokens; the first "
        "encrypts, all decrypt (rotate: put a new key first, run `jitaccess signins "
        "rotate-key`, then drop the old one)",
    )
    mfa_auth_context: str = Field(
        default="c1",
        validation_alias="JITACCESS_MFA_AUTH_CONTEXT",
        description="The Conditional Access authentication context (c1…c99) that requires "
        "multi-factor sign-in, for applications with require_mfa",
    )
    mfa_max_age_minutes: float = Field(
        default=60.0,
        gt=0,
        validation_alias="JITACCESS_MFA_MAX_AGE_MINUTES",
        description="How recent a multi-factor sign-in must be for require_mfa",
    )
    native_poll_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias="JITACCESS_NATIVE_POLL_SECONDS",
        description="How often serve reads native applications and their JIT requests "
        "from Azure (0: never)",
    )
    reconcile_interval_minutes: float = Field(
        default=60.0,
        ge=0,
        validation_alias="JITACCESS_RECONCILE_INTERVAL_MINUTES",
        description="How often serve compares backends with the database (0: never)",
    )
    audit_head_interval_minutes: float = Field(
        default=5.0,
        ge=0,
        validation_alias="JITACCESS_AUDIT_HEAD_INTERVAL_MINUTES",
        description="How often serve logs the audit head (SEQ:HASH) to ship off-box (0: never)",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias="JITACCESS_LOG_LEVEL",
        description="Python log level: DEBUG, INFO, WARNING, ERROR or CRITICAL",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        validation_alias="JITACCESS_LOG_FORMAT",
        description="text for people, json for log pipelines",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError("not a log level")
        return level

    @field_validator("token_keys")
    @classmethod
    def _fernet_keys(cls, value: str | None) -> str | None:
        """Every key must be a Fernet key, or every command would fail at its first
        sign-in (a malformed key is reported at start, never echoed: it is a secret)."""
        if value is None or not value.strip():
            return None
        from cryptography.fernet import Fernet

        for key in value.split(","):
            if not key.strip():
                continue
            try:
                Fernet(key.strip().encode())
            except ValueError:
                raise ValueError("not a Fernet key") from None
        return value

    @field_validator("mfa_auth_context")
    @classmethod
    def _auth_context(cls, value: str) -> str:
        if not AUTH_CONTEXT.fullmatch(value.strip()):
            raise ValueError("not an authentication context id")
        return value.strip()

    @field_validator("entra_authority")
    @classmethod
    def _authority(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip().rstrip("/"))
        tenant = parts.path.strip("/")
        if parts.scheme != "https" or not parts.netloc or not tenant or "/" in tenant:
            raise ValueError("not an authority")
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
            raise ValueError("not a URL")
        return value.strip()

    def signin_problems(self) -> list[str]:
        """One line per setting Sign in with Microsoft still needs, once any of its
        Entra settings is given: half of it would only fail at someone's first sign-in
        (``serve`` refuses to start with these instead)."""
        if not (self.entra_authority or self.entra_client_id or self.entra_client_secret):
            return []
        needed = {
            "ENTRA_AUTHORITY": (
                self.entra_authority,
                "https://login.microsoftonline.com/<tenant-id>, the customer's tenant",
            ),
            "ENTRA_CLIENT_ID": (
                self.entra_client_id,
                "the app registration people sign in to (its Application (client) ID)",
            ),
            "ENTRA_CLIENT_SECRET": (self.entra_client_secret, "that app registration's secret"),
            "JITACCESS_PUBLIC_URL": (
                self.public_url,
                "where browsers reach jitaccess's web role; the app registration's redirect "
                "URI is it followed by /auth/callback",
            ),
            "JITACCESS_TOKEN_KEYS": (
                self.token_keys,
                "the key encrypting stored sign-ins: make one with `jitaccess signins new-key`",
            ),
        }
        return [
            f"{name}: {what} (Sign in with Microsoft is half set up)"
            for name, (value, what) in needed.items()
            if not value
        ]

    def missing_slack_settings(self, role: Role | None = None) -> list[str]:
        """One line per Slack setting ``serve --role role`` (default: this role) needs
        and does not have. Every role needs the bot token (the web opens modals and
        reads users with it, the worker delivers with it); only a role that answers
        Slack needs the signing secret (HTTP) or the app-level token (Socket Mode)."""
        role = self.role if role is None else role
        missing = []
        if not self.slack_bot_token:
            missing.append(
                "SLACK_BOT_TOKEN: the bot token (xoxb-…) from the Slack app's "
                "OAuth & Permissions page; the app posts and reads users with it"
            )
        if role.answers_slack and not self.slack_signing_secret and not self.slack_app_token:
            missing.append(
                "SLACK_SIGNING_SECRET: from the Slack app's Basic Information page; it proves "
                "HTTP requests come from Slack (or set SLACK_APP_TOKEN for Socket Mode)"
            )
        return missing


class SettingsError(Exception):
    """Some settings are invalid. ``lines`` has one line per bad setting: its name, what
    it got and what it accepts; ``str(err)`` joins them."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_settings(**values: Any) -> Settings:
    """The settings from the environment (and ``.env``); :class:`SettingsError` naming
    each bad one instead of pydantic's report."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def _problems(exc: ValidationError) -> list[str]:
    by_alias = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
    lines = []
    for error in exc.errors():
        alias = str(error["loc"][0]) if error["loc"] else "?"
        name = by_alias.get(alias)
        accepts = _accepts(name) if name else error["msg"]
        if name in SECRET_SETTINGS:
            lines.append(f"{alias} is not valid: expected {accepts} (environment or .env)")
            continue
        got = repr(error.get("input"))
        if len(got) > 60:
            got = got[:59] + "…"
        lines.append(f"{alias} is {got}: expected {accepts} (environment or .env)")
    return lines


def _accepts(name: str) -> str:
    """What setting ``name`` accepts, in words, from its type and bounds."""
    if name == "log_level":
        return ", ".join(LOG_LEVELS[:-1]) + " or " + LOG_LEVELS[-1]
    if name in ACCEPTS:
        return ACCEPTS[name]
    field = Settings.model_fields[name]
    kind: Any = field.annotation
    choices: list[str] = []
    if isinstance(kind, type) and issubclass(kind, Enum):
        choices = [str(member.value) for member in kind]
    elif getattr(kind, "__origin__", None) is Literal:
        choices = [str(arg) for arg in kind.__args__]
    if choices:
        return ", ".join(choices[:-1]) + " or " + choices[-1]
    words = {int: "a whole number", float: "a number"}.get(kind, "text")
    low = high = None
    bounds = []
    for rule in field.metadata:
        if isinstance(rule, Gt):
            bounds.append(f"above {rule.gt}")
        elif isinstance(rule, Ge):
            low = rule.ge
            bounds.append(f"at least {rule.ge}")
        elif isinstance(rule, Lt):
            bounds.append(f"below {rule.lt}")
        elif isinstance(rule, Le):
            high = rule.le
            bounds.append(f"at most {rule.le}")
    if len(bounds) == 2 and low is not None and high is not None:
        bounds = [f"from {low} to {high}"]
    return words + (" " + " and ".join(bounds) if bounds else "")


def env_example() -> str:
    """The text of ``.env.example``: every setting, its purpose and its default."""
    lines = [
        "# Every setting jitaccess reads, with its default. Copy to .env and edit.",
        "# `make env-example` rewrites this file from jitaccess/settings.py.",
        "",
    ]
    for field in Settings.model_fields.values():
        default = "" if field.default is None else str(field.default)
        lines += [f"# {field.description}", f"{field.validation_alias}={default}", ""]
    return "\n".join(lines)
