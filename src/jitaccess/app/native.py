"""Native mode's use cases: Azure Managed Applications' own JIT, driven from Slack.

Azure is the enforcer and the auditor; jitaccess is the front end and the witness.

- :meth:`NativeApps.import_apps` registers the managed applications of a subscription
  (or resource group): the managed resource group is the scope, ``jitAccessPolicy``
  the policy, Entra approvers mapped to Slack people (Graph mail → Slack
  ``users.lookupByEmail``); what cannot be mapped is listed, never guessed.
- :meth:`NativeApps.refresh` (every minute under ``serve``) reads each application's
  policy back, adopting and auditing a change made in the portal, then follows every
  open request's ``jitRequestState`` and picks up requests made in the portal.
- :meth:`NativeApps.write_policy` writes a consumer admin's change back: read, compare
  with what jitaccess last saw (the 2021-07-01 application has no etag), refuse and
  show the difference if the portal changed it meanwhile, else PATCH and wait.
- :meth:`NativeApps.submit` creates the ``jitRequests`` resource as the publisher
  (their own sign-in, never jitaccess's identity); :meth:`NativeApps.decide` decides
  the PIM approval stage as the approver. Both call Azure first and record only what
  Azure accepted; nothing is recorded when Azure refuses or answers out of shape.

Access is granted and ended by Azure. The sweep still walks the request through
``active`` and ``expired`` with :class:`jitaccess.providers.native.NativeWitness` as its
provider, which writes nothing: it confirms with Azure instead.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app import journal
from jitaccess.app.after_change import AfterChange
from jitaccess.app.requests import already, record_decision
from jitaccess.app.signins import NotSignedIn, SignIns
from jitaccess.app.views import AppView, RequestView
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, RuleViolation, WebLink
from jitaccess.domain.lifecycle import FINAL_STATES, Event, RequestState, initial_state
from jitaccess.domain.native import (
    NATIVE_PROVIDER,
    ApproverKind,
    DirectoryPort,
    ExternalLookupFailed,
    ImportReport,
    JitApprovalMode,
    JitApprover,
    JitRequestState,
    ManagedApp,
    ManagedAppsPort,
    NativePolicy,
    NativeRequest,
    PimApprovalsPort,
    RoleAuthorization,
    SignInLapsed,
    check_jit_can_be_enabled,
    check_step_up,
    native_refusal,
    state_for,
)
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store import audit
from jitaccess.store import signins as stored_signins
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application
from jitaccess.store.rows import Rows

log = logging.getLogger("jitaccess.native")

#: Who the audit names when Azure made a change (a decision in the portal, a time-out).
AZURE_ACTOR = "azure"

#: Built-in Azure role definition GUIDs and the names people type.
BUILT_IN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
}

#: Where a person decides a managed-application JIT request in the portal. Microsoft
#: documents the navigation, not deep links (README, "Native Azure Managed
#: Applications"): the PIM approvals blade, whose "Azure managed applications" tab has no
#: documented link, and the application itself (JIT Access → Approve Requests).
PORTAL_APPROVALS = (
    "https://portal.azure.com/#view/Microsoft_Azure_PIMCommon/ApproveRequestMenuBlade"
)


def portal_link(application_id: str) -> str:
    """The application in the portal (the generic resource link)."""
    return f"https://portal.azure.com/#resource{application_id}"


_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

#: The Slack person with this e-mail address, or None (``users.lookupByEmail``).
SlackLookup = Callable[[str], "str | None"]


#: What a sign-in link is called wherever it is shown.
SIGN_IN_LABEL = "Sign in with Microsoft"


class NeedsSignIn(RuleViolation):
    """The action needs the person's own Entra sign-in (missing, lapsed, or without
    the multi-factor proof the policy asks): the message carries a fresh link."""

    def __init__(self, why: str, link: str) -> None:
        # The link is a part of its own: Slack shows it as "Sign in with Microsoft", the
        # CLI as "Sign in with Microsoft: https://…".
        super().__init__(
            f"{why}. ",
            WebLink(link, SIGN_IN_LABEL),
            " (the link is yours alone, works once and expires in 10 minutes)",
        )
        self.link = link


@dataclass
class RefreshReport:
    policies_changed: list[str] = field(default_factory=list)
    requests_changed: int = 0
    requests_found: int = 0
    failures: list[str] = field(default_factory=list)


def role_name(role_definition_id: str) -> str:
    guid = role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return BUILT_IN_ROLES.get(guid, guid)


def policy_json(policy: NativePolicy | None) -> dict[str, Any] | None:
    """A policy as stored in ``provider_config['azure_policy']`` (what jitaccess last saw)."""
    if policy is None:
        return None
    return {
        "enabled": policy.enabled,
        "approval_mode": policy.approval_mode.value,
        "max_duration_s": int(policy.max_duration.total_seconds()),
        "approvers": [
            {"id": a.id, "kind": a.kind.value, "display_name": a.display_name}
            for a in policy.approvers
        ],
    }


def policy_of(data: dict[str, Any] | None) -> NativePolicy | None:
    if data is None:
        return None
    return NativePolicy(
        enabled=bool(data["enabled"]),
        approval_mode=JitApprovalMode(data["approval_mode"]),
        max_duration=timedelta(seconds=int(data["max_duration_s"])),
        approvers=tuple(
            JitApprover(id=a["id"], kind=ApproverKind(a["kind"]), display_name=a["display_name"])
            for a in data["approvers"]
        ),
    )


def is_native(app: Application | AppView) -> bool:
    return app.provider == NATIVE_PROVIDER


class NativeApps:
    """Native mode's use cases (see the module docstring). Azure is called outside
    any transaction; each database step is one transaction."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        after_change: AfterChange,
        *,
        managed_apps: ManagedAppsPort | None,
        pim: PimApprovalsPort | None,
        graph: DirectoryPort | None,
        slack_lookup: SlackLookup | None,
        signins: SignIns,
    ) -> None:
        self.db = db
        self.rows = rows
        self.after_change = after_change
        self._managed_apps = managed_apps
        self._pim = pim
        self._graph = graph
        self.slack_lookup = slack_lookup
        self.signins = signins

    # -- the adapters, or a refusal saying what to configure -------------------------

    @property
    def managed_apps(self) -> ManagedAppsPort:
        if self._managed_apps is None:
            raise RuleViolation(
                "Native mode needs Azure Resource Manager: configure AZURE_TENANT_ID, "
                "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or a managed identity)"
            )
        return self._managed_apps

    @property
    def pim(self) -> PimApprovalsPort:
        if self._pim is None:
            raise RuleViolation("Native mode needs Azure Resource Manager for PIM approvals")
        return self._pim

    def _azure(
        self,
        what: str,
        call: Callable[[], Any],
        *,
        as_person: tuple[str, datetime] | None = None,
    ) -> Any:
        """Call Azure; a failed lookup refuses the action with the reason. A call made
        ``as_person`` (their token) that Azure refuses as unauthenticated asks them to
        sign in again."""
        try:
            return call()
        except SignInLapsed as exc:
            if as_person is None:
                raise RuleViolation(f"{what} failed, nothing was recorded: {exc}") from None
            person, now = as_person
            raise self._needs_sign_in(
                person, f"Azure did not accept your sign-in ({exc})", now, step_up=False
            ) from None
        except ExternalLookupFailed as exc:
            raise RuleViolation(f"{what} failed, nothing was recorded: {exc}") from None

    # -- import and policy -----------------------------------------------------------

    def import_apps(
        self,
        subscription_id: str,
        resource_group: str | None,
        *,
        publishers: Sequence[str],
        admins: Sequence[str],
        requests_resource_group: str | None,
        actor: str,
        now: datetime,
    ) -> ImportReport:
        """Register (or update) each managed application found as a native application."""
        found: list[ManagedApp] = self._azure(
            "Listing the managed applications",
            lambda: self.managed_apps.list_applications(subscription_id, resource_group),
        )
        report = ImportReport()
        for managed in found:
            name = _NAME_CHARS.sub("-", managed.name).strip("-.")[:100] or "managed-app"
            mapping = self._map_approvers(managed.policy, report, name)
            with self.db.transaction() as session:
                existing = self.rows.find_app(session, name)
                if existing is not None and not is_native(existing):
                    report.refused.append(
                        f"{name}: an application of that name already exists in engine mode"
                    )
                    continue
                if existing is not None and existing.provider_config.get("application_id") != (
                    managed.id
                ):
                    report.refused.append(
                        f"{name}: already names another managed application "
                        f"({existing.provider_config.get('application_id')})"
                    )
                    continue
                row = existing or Application(
                    name=name,
                    created_at=now,
                    publishers=list(publishers),
                    admins=list(admins),
                    breakglass=[],
                    approval_timeout_s=int(timedelta(hours=24).total_seconds()),
                    required_approvals=1,
                    feed_channel=None,
                    provider=NATIVE_PROVIDER,
                    removed_at=None,
                )
                if existing is None:
                    session.add(row)
                else:
                    row.publishers = list(dict.fromkeys([*row.publishers, *publishers]))
                    row.admins = list(dict.fromkeys([*row.admins, *admins]))
                roles = {
                    role_name(a.role_definition_id): a.role_definition_id
                    for a in managed.authorizations
                }
                row.scope = managed.managed_resource_group_id
                row.eligible_roles = sorted(roles) or ["Reader"]
                row.provider_config = {
                    "application_id": managed.id,
                    # Inferred, not documented: the publisher's only jitRequests/write
                    # right is over the managed resource group (README, native section).
                    "requests_scope": requests_resource_group or managed.managed_resource_group_id,
                    "roles": roles,
                    "jit_enabled_at_deployment": managed.policy is not None
                    and managed.policy.enabled,
                    "azure_policy": policy_json(managed.policy),
                    "approver_map": mapping,
                }
                self._adopt(row, managed.policy, mapping)
                row.updated_at = now
                session.flush()
                audit.append(
                    session,
                    at=now,
                    actor=actor,
                    action="native_imported" if existing is None else "native_reimported",
                    app=name,
                    details={"application_id": managed.id, "policy": policy_json(managed.policy)},
                )
                (report.registered if existing is None else report.updated).append(name)
                if managed.policy is None or not managed.policy.enabled:
                    report.refused.append(
                        f"{name}: JIT access is disabled on it in Azure (and cannot be enabled "
                        "after deployment); requests for it will be refused"
                    )
        return report

    def _map_approvers(
        self, policy: NativePolicy | None, report: ImportReport, app: str
    ) -> dict[str, str | None]:
        """Entra user approver id → Slack user id (None: could not be mapped, listed)."""
        mapping: dict[str, str | None] = {}
        for approver in policy.approvers if policy else ():
            if approver.kind is not ApproverKind.USER:
                continue
            label = approver.display_name or approver.id
            email = None
            if self._graph is not None:
                try:
                    email = self._graph.user_email(approver.id)
                except ExternalLookupFailed as exc:
                    report.unmapped.append(f"{app}: Entra user {label}: Graph failed ({exc})")
                    mapping[approver.id] = None
                    continue
            if email is None:
                report.unmapped.append(f"{app}: Entra user {label}: no mail in Graph")
                mapping[approver.id] = None
                continue
            try:
                slack = self.slack_lookup(email) if self.slack_lookup else None
            except ExternalLookupFailed as exc:
                report.unmapped.append(
                    f"{app}: Entra user {label} ({email}): Slack's lookup failed ({exc})"
                )
                mapping[approver.id] = None
                continue
            if slack is None:
                report.unmapped.append(
                    f"{app}: Entra user {label} ({email}): no Slack account with that e-mail"
                )
            mapping[approver.id] = slack
        return mapping

    def _adopt(
        self, row: Application, policy: NativePolicy | None, mapping: dict[str, str | None]
    ) -> None:
        """Make the row's policy Azure's."""
        row.jit_enabled = bool(policy and policy.enabled)
        manual = policy is not None and policy.approval_mode is JitApprovalMode.MANUAL
        row.approval_mode = (ApprovalMode.MANUAL if manual else ApprovalMode.AUTOMATIC).value
        row.max_duration_s = int(
            (policy.max_duration if policy else timedelta(hours=8)).total_seconds()
        )
        row.approvers = [
            slack
            for approver in (policy.approvers if policy else ())
            if approver.kind is ApproverKind.USER and (slack := mapping.get(approver.id))
        ]

    def refresh(self, now: datetime) -> RefreshReport:
        """Read every native application's policy, adopt changes made in the portal
        (audited), and follow the requests. Under ``serve`` every minute."""
        report = RefreshReport()
        with self.db.transaction(readonly=True) as session:
            apps = [
                (row.name, dict(row.provider_config or {}))
                for row in self.rows.apps(session)
                if is_native(row) and row.removed_at is None
            ]
        for name, config in apps:
            try:
                managed = self.managed_apps.get_application(config["application_id"])
            except ExternalLookupFailed as exc:
                report.failures.append(f"{name}: {exc}")
                continue
            seen = config.get("azure_policy")
            if policy_json(managed.policy) != seen:
                mapping = self._map_approvers(managed.policy, ImportReport(), name)
                self._store_azure_policy(name, managed.policy, mapping, now, AZURE_ACTOR)
                report.policies_changed.append(name)
        self.follow(now, report)
        return report

    def _store_azure_policy(
        self,
        name: str,
        policy: NativePolicy | None,
        mapping: dict[str, str | None],
        now: datetime,
        actor: str,
        action: str = "policy_changed_in_azure",
    ) -> None:
        with self.db.transaction() as session:
            row = self.rows.app(session, name)
            before = policy_of(row.provider_config.get("azure_policy"))
            config = dict(row.provider_config)
            config["azure_policy"] = policy_json(policy)
            config["approver_map"] = {**config.get("approver_map", {}), **mapping}
            row.provider_config = config
            self._adopt(row, policy, config["approver_map"])
            row.updated_at = now
            lines = before.differences(policy) if before and policy else ["policy replaced"]
            audit.append(
                session,
                at=now,
                actor=actor,
                action=action,
                app=name,
                reason="; ".join(lines),
                details={"before": policy_json(before), "after": policy_json(policy)},
            )

    def write_policy(
        self,
        app_name: str,
        *,
        actor: str,
        now: datetime,
        mode: ApprovalMode | None = None,
        max_duration: timedelta | None = None,
        enabled: bool | None = None,
    ) -> AppView:
        """A consumer admin's change, written to the application's ``jitAccessPolicy``."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.app(session, app_name)
            view = AppView.of(row)
        rules.check_admin(view.rules(), actor)
        config = view.provider_config
        current: ManagedApp = self._azure(
            "Reading the managed application",
            lambda: self.managed_apps.get_application(config["application_id"]),
        )
        if policy_json(current.policy) != config.get("azure_policy"):
            before = policy_of(config.get("azure_policy"))
            lines = (
                before.differences(current.policy)
                if before and current.policy
                else ["the policy was added or removed"]
            )
            mapping = self._map_approvers(current.policy, ImportReport(), app_name)
            self._store_azure_policy(app_name, current.policy, mapping, now, AZURE_ACTOR)
            raise Conflict(
                f"{app_name}'s JIT policy was changed in Azure since jitaccess last read it ("
                + "; ".join(lines)
                + "). jitaccess now shows Azure's policy: look at it and make your change again"
            )
        if current.policy is None:
            check_jit_can_be_enabled(False, True)
            raise AssertionError("unreachable")
        if enabled:
            check_jit_can_be_enabled(bool(config.get("jit_enabled_at_deployment")), True)
        if mode is ApprovalMode.MANUAL and not current.policy.approvers:
            raise RuleViolation(
                "Manual approval needs at least one approver in Azure: add one to the "
                "application's JIT configuration in the portal first"
            )
        wanted = replace(
            current.policy,
            enabled=current.policy.enabled if enabled is None else enabled,
            approval_mode=current.policy.approval_mode
            if mode is None
            else (JitApprovalMode.MANUAL if mode is ApprovalMode.MANUAL else JitApprovalMode.AUTO),
            max_duration=current.policy.max_duration if max_duration is None else max_duration,
        )
        if wanted == current.policy:
            return view
        written: ManagedApp = self._azure(
            "Writing the JIT policy to Azure",
            lambda: self.managed_apps.write_policy(config["application_id"], wanted),
        )
        self._store_azure_policy(
            app_name,
            written.policy,
            dict(config.get("approver_map", {})),
            now,
            actor,
            action="policy_written_to_azure",
        )
        with self.db.transaction(readonly=True) as session:
            return AppView.of(self.rows.app(session, app_name))

    @staticmethod
    def _approver_groups(config: Mapping[str, Any]) -> list[str]:
        """The Entra groups among the application's ``jitApprovers`` (as last read)."""
        return [
            a["id"]
            for a in (config.get("azure_policy") or {}).get("approvers", [])
            if a["kind"] == ApproverKind.GROUP
        ]

    def _group_members(self, group: str) -> frozenset[str]:
        """The group's user object ids, read from Graph now; a group that cannot be
        read is a failed lookup: refused, never guessed."""
        assert self._graph is not None
        try:
            return self._graph.group_member_ids(group)
        except ExternalLookupFailed as exc:
            raise RuleViolation(f"Could not read the Entra approver group {group}: {exc}") from None

    def is_azure_approver(self, config: Mapping[str, Any], object_id: str) -> bool:
        """Whether the Entra account ``object_id`` is one of the application's
        ``jitApprovers``, directly or through a group (read now). A group that cannot be
        read does not count as naming them."""
        approvers = (config.get("azure_policy") or {}).get("approvers", [])
        if any(a["kind"] == ApproverKind.USER and a["id"] == object_id for a in approvers):
            return True
        if self._graph is None:
            return False
        for group in self._approver_groups(config):
            try:
                if object_id in self._group_members(group):
                    return True
            except RuleViolation:
                continue
        return False

    def deciders(self, mapped: Sequence[str], config: Mapping[str, Any]) -> tuple[str, ...]:
        """The Slack people who may decide on a native application's request: its mapped
        approvers, and the linked members of its Entra approver groups, read from Graph
        now (someone who left the group cannot decide)."""
        people = list(mapped)
        groups = self._approver_groups(config)
        if groups and self._graph is not None:
            links = {link.object_id: link.slack_user for link in self.signins.links()}
            for group in groups:
                people.extend(links[m] for m in self._group_members(group) if m in links)
        return tuple(dict.fromkeys(people))

    # -- requests --------------------------------------------------------------------

    def _needs_sign_in(self, person: str, why: str, now: datetime, *, step_up: bool) -> NeedsSignIn:
        return NeedsSignIn(why, self.signins.link_for(person, now=now, step_up=step_up))

    def _token(self, person: str, now: datetime, *, doing: str) -> tuple[str, Any]:
        try:
            return self.signins.tokens_for(person, now=now)
        except NotSignedIn:
            raise self._needs_sign_in(
                person,
                f"To {doing} in Azure as yourself, sign in with Microsoft first",
                now,
                step_up=False,
            ) from None
        except SignInLapsed as exc:
            raise self._needs_sign_in(
                person, f"To {doing} in Azure as yourself, sign in again: {exc}", now, step_up=False
            ) from None
        except ExternalLookupFailed as exc:
            raise RuleViolation(
                f"Microsoft sign-in could not be reached to {doing} as you, nothing was "
                f"recorded: {exc}"
            ) from None

    def submit(
        self,
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> RequestView:
        """Create the jitRequests resource as the publisher, then record it."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.app(session, app_name)
            view = AppView.of(row)
            role, window, justification = rules.check_submission(
                view.rules(), requester, role, duration, starts_at, justification, now
            )
            rules.check_no_overlap(
                window, self.rows.open_windows(session, requester, row.scope, role)
            )
        config = view.provider_config
        # Cards go to the mapped approvers and the linked members of approver groups.
        notified = self.deciders(view.policy.approvers, config)
        token, link = self._token(requester, now, doing="request access")
        request_id = (
            f"{config['requests_scope']}/providers/Microsoft.Solutions/jitRequests/"
            f"jit-{uuid.uuid4()}"
        )
        created: NativeRequest = self._azure(
            "Creating the JIT request in Azure",
            lambda: self.managed_apps.create_request(
                token,
                request_id,
                config["application_id"],
                [RoleAuthorization(link.object_id, config["roles"][role])],
                window.starts_at,
                window.ends_at - window.starts_at,
            ),
            as_person=(requester, now),
        )
        with self.db.transaction() as session:
            app = self.rows.app(session, app_name)
            new = self._new_row(
                session,
                app,
                created,
                requester,
                role,
                justification,
                now,
                actor=requester,
                notified=notified,
            )
            self._apply(session, new, created, now)
            result = RequestView.of(new)
        return self.after_change.settled(result, now)

    def _new_row(
        self,
        session: Session,
        app: Application,
        native: NativeRequest,
        requester: str,
        role: str,
        justification: str,
        now: datetime,
        *,
        actor: str,
        notified: Sequence[str] | None = None,
    ) -> AccessRequest:
        starts_at = native.starts_at.astimezone(UTC)
        ends_at = (native.starts_at + native.duration).astimezone(UTC)
        row = AccessRequest(
            app=app,
            requester=requester,
            role=role,
            justification=justification,
            starts_at=starts_at,
            ends_at=ends_at,
            # Azure times the request out; jitaccess's own deadline is the window's end.
            approval_deadline_at=ends_at,
            approval_mode=app.approval_mode,
            notified_approvers=list(notified if notified is not None else app.approvers),
            required_approvals=1,
            created_at=now,
            feed_channel=app.feed_channel,
            attempts=0,
            state=initial_state(),
            native_request_id=native.id,
            native_state=JitRequestState.PENDING.value,
        )
        row.next_deadline_at = row.approval_deadline_at
        session.add(row)
        session.flush()
        journal.record(
            session,
            row,
            "submit",
            None,
            actor=actor,
            now=now,
            reason=justification,
            details={"jit_request": native.id},
        )
        return row

    def _apply(
        self, session: Session, row: AccessRequest, native: NativeRequest, now: datetime
    ) -> bool:
        """Move ``row`` to what Azure says (audited). Returns whether anything changed.
        A state jitaccess cannot act on raises :class:`ExternalLookupFailed`."""
        target = state_for(native.state, row.starts_at, row.ends_at, now)
        changed = row.native_state != native.state.value
        row.native_state = native.state.value
        reason = f"Azure reports the JIT request {native.state.value}"
        details = {"jit_request": native.id, "jitRequestState": native.state.value}
        if row.state == RequestState.PENDING and target != RequestState.PENDING:
            changed = True
            if target in (RequestState.APPROVED, RequestState.ACTIVE, RequestState.EXPIRED):
                event = (
                    Event.AUTO_APPROVE
                    if row.approval_mode == ApprovalMode.AUTOMATIC.value
                    else Event.APPROVE
                )
                # Due at its start: the sweep walks it through active and expired with
                # the witness.
                record_decision(
                    session, row, event, actor=AZURE_ACTOR, now=now, reason=reason, details=details
                )
                return True
            event = {
                RequestState.DENIED: Event.DENY,
                RequestState.CANCELLED: Event.CANCEL,
                RequestState.TIMED_OUT: Event.TIME_OUT,
                RequestState.FAILED: Event.FAIL,
            }[RequestState(target)]
            if event is Event.DENY:
                record_decision(
                    session, row, event, actor=AZURE_ACTOR, now=now, reason=reason, details=details
                )
            else:
                journal.transition(
                    session, row, event, actor=AZURE_ACTOR, now=now, reason=reason, details=details
                )
            row.ended_at = now
            row.ended_by = AZURE_ACTOR
            row.end_reason = reason
            row.next_deadline_at = None
            return True
        if row.state in FINAL_STATES or target not in FINAL_STATES:
            # Final here already, or still going in Azure (Pending while jitaccess shows
            # approved: Azure has not caught up with the decision it accepted).
            return changed
        # Approved or active here, over in Azure: Azure ended it. The sweep confirms with
        # the witness (a grant may have been recorded) and ends the request.
        if row.end_requested is None:
            row.end_requested = Event.EXPIRE
            row.end_requested_by = AZURE_ACTOR
            row.end_requested_at = now
            row.end_requested_reason = reason
            row.next_deadline_at = now
            return True
        return changed

    def follow(self, now: datetime, report: RefreshReport | None = None) -> RefreshReport:
        """Read each open native request's ``jitRequestState`` and move it; pick up
        requests made in the portal on a native application."""
        report = report or RefreshReport()
        with self.db.transaction(readonly=True) as session:
            open_rows = self.rows.open_native_requests(session)
            known = set(self.rows.native_request_ids(session))
            apps = {
                row.provider_config.get("application_id", "").lower(): row.name
                for row in self.rows.apps(session)
                if is_native(row) and row.removed_at is None
            }
            subscriptions = sorted(
                {
                    str(row.provider_config.get("requests_scope", "")).split("/")[2]
                    for row in self.rows.apps(session)
                    if is_native(row)
                    and row.removed_at is None
                    and str(row.provider_config.get("requests_scope", "")).count("/") >= 2
                }
            )
        for request_id, native_id in open_rows:
            try:
                native = self.managed_apps.get_request(native_id)
            except ExternalLookupFailed as exc:
                report.failures.append(f"request {request_id}: {exc}")
                continue
            if self._follow_one(request_id, native, now):
                report.requests_changed += 1
        for subscription in subscriptions:
            try:
                listed = self.managed_apps.list_requests(subscription)
            except ExternalLookupFailed as exc:
                report.failures.append(f"jitRequests of {subscription}: {exc}")
                continue
            for native in listed:
                app_name = apps.get(native.application_id.lower())
                if app_name is None or native.id in known:
                    continue
                if self._adopt_portal_request(app_name, native, now):
                    report.requests_found += 1
                    known.add(native.id)
        return report

    def _follow_one(self, request_id: int, native: NativeRequest, now: datetime) -> bool:
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state in FINAL_STATES:
                return False
            try:
                return self._apply(session, row, native, now)
            except ExternalLookupFailed as exc:
                row.last_error = str(exc)
                log.warning("native request %s: %s", request_id, exc)
                return False

    def _adopt_portal_request(self, app_name: str, native: NativeRequest, now: datetime) -> bool:
        """A request made in the Azure portal: recorded with its creator (their Slack
        account when linked, else their Entra object id) and followed like ours."""
        with self.db.transaction() as session:
            if native.id in set(self.rows.native_request_ids(session)):
                return False
            app = self.rows.app(session, app_name)
            creator = native.created_by or "unknown"
            requester = stored_signins.slack_user_of(session, creator) or creator
            roles = {v.lower(): k for k, v in (app.provider_config.get("roles") or {}).items()}
            role = next(
                (
                    roles.get(a.role_definition_id.lower(), role_name(a.role_definition_id))
                    for a in native.authorizations
                ),
                "unknown",
            )
            row = self._new_row(
                session,
                app,
                native,
                requester,
                role,
                "requested in the Azure portal",
                now,
                actor=AZURE_ACTOR,
            )
            try:
                self._apply(session, row, native, now)
            except ExternalLookupFailed as exc:
                row.last_error = str(exc)
            return True

    def decide(
        self,
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        approve: bool,
        deciders: Callable[[AccessRequest], Sequence[str]],
    ) -> RequestView:
        """Decide the PIM approval stage as ``actor`` (their own sign-in), then record it."""
        verb = Event.APPROVE if approve else Event.DENY
        with self.db.transaction(readonly=True) as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING:
                raise Conflict(*already(row))
            rules.check_decider(deciders(row), row.requester, actor, verb)
            reason = rules.check_reason(reason, verb)
            scope = row.app.scope
            native_id = row.native_request_id or ""
            require_mfa = row.app.require_mfa
            app_id = str(row.app.provider_config.get("application_id", ""))
        token, link = self._token(actor, now, doing=str(verb))
        if require_mfa:
            self.check_step_up(actor, link.user(), now)
        native: NativeRequest = self._azure(
            "Reading the JIT request", lambda: self.managed_apps.get_request(native_id)
        )
        if native.state is not JitRequestState.PENDING:
            with self.db.transaction() as session:
                row = self.rows.lock(session, request_id)
                if row.state not in FINAL_STATES:
                    self._apply(session, row, native, now)
            raise Conflict(
                f"Request {request_id} is no longer pending in Azure: Azure reports it "
                f"{native.state.value}"
            )
        stage = self._azure(
            "Looking up your PIM approval",
            lambda: self.pim.find_stage(token, scope, native),
            as_person=(actor, now),
        )
        if stage is None:
            raise RuleViolation(
                f"Azure's public API shows no approval waiting for you ({link.username}) on "
                f"request {request_id}. Decide it in the Azure portal: PIM, Approve requests, "
                f"Azure managed applications ({PORTAL_APPROVALS}), or the application's JIT "
                f"Access, Approve Requests ({portal_link(app_id)}); jitaccess follows the "
                "outcome"
            )
        self._azure(
            "Recording your decision in Azure",
            lambda: self.pim.decide(token, stage, approve, reason),
            as_person=(actor, now),
        )
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING:
                raise Conflict(*already(row))
            row.native_state = (
                JitRequestState.APPROVED if approve else JitRequestState.DENIED
            ).value
            record_decision(
                session,
                row,
                verb,
                actor=actor,
                now=now,
                reason=reason,
                details={
                    "jit_request": native_id,
                    "entra_user": link.username,
                    "approval": stage.approval_id,
                    "stage": stage.stage_id,
                },
            )
            result = RequestView.of(row)
        return self.after_change.settled(result, now)

    def sign_in_refusal(
        self, actor: str, *, now: datetime, doing: str, require_mfa: bool
    ) -> RuleViolation | None:
        """Why ``actor`` must sign in with Microsoft before they ``doing`` (with the
        link), from what jitaccess stored; None when their link looks usable. Sign-in
        not set up at all is the refusal saying what to configure."""
        try:
            link = self.signins.link_of(actor) if self.signins.available else None
            if link is None:
                if not self.signins.available:
                    self.signins.link_for(actor, now=now)  # raises SignInUnavailable
                why = (
                    f"To {doing} this request, sign in with Microsoft first"
                    + (" (with multi-factor authentication)" if require_mfa else "")
                    + ": you have not signed in yet"
                )
                return self._needs_sign_in(actor, why, now, step_up=require_mfa)
            if require_mfa:
                self.check_step_up(actor, link.user(), now)
        except RuleViolation as exc:
            return exc
        return None

    def check_step_up(self, actor: str, user: Any, now: datetime) -> None:
        """Refuse (with a sign-in link asking for multi-factor) unless ``user``'s
        sign-in proves it recently enough."""
        why = check_step_up(user, self.signins.mfa_auth_context, self.signins.mfa_max_age, now)
        if why is not None:
            raise self._needs_sign_in(actor, why[0].upper() + why[1:], now, step_up=True)

    def require_step_up(self, actor: str, now: datetime) -> None:
        """For ``require_mfa`` on an engine-mode application: the approver's link must
        prove a recent multi-factor sign-in; nothing else of Azure is involved."""
        refusal = self.sign_in_refusal(actor, now=now, doing="approve", require_mfa=True)
        if refusal is not None:
            raise refusal

    def refuse(self, application_id: str, verb: str) -> None:
        """Extend, release, revoke and cancel do not exist for a jitRequests resource."""
        raise native_refusal(
            verb,
            "Its window is Azure's: see it in the Azure portal under the application's JIT "
            f"Access, Request History ({portal_link(application_id)}).",
        )

    def compare(self, app_name: str, now: datetime) -> list[tuple[int, str]]:
        """For ``reconcile``: each open native request of ``app_name`` whose jitaccess
        state differs from what Azure's ``jitRequestState`` implies now."""
        with self.db.transaction(readonly=True) as session:
            rows = [
                (r.id, r.native_request_id or "", r.state, r.starts_at, r.ends_at)
                for r in self.rows.native_requests(session)
                if r.app.name == app_name
            ]
        found: list[tuple[int, str]] = []
        for request_id, native_id, ours, starts, ends in rows:
            try:
                native = self.managed_apps.get_request(native_id)
                theirs = state_for(native.state, starts, ends, now)
            except ExternalLookupFailed as exc:
                found.append((request_id, f"Azure could not be read: {exc}"))
                continue
            approved = {RequestState.APPROVED.value, RequestState.AUTO_APPROVED.value}
            if theirs != ours and not {theirs, ours} <= approved:
                found.append(
                    (
                        request_id,
                        f"jitaccess shows {ours}, Azure reports {native.state.value} "
                        f"(which is {theirs} here)",
                    )
                )
        return found


__all__ = ["NativeApps", "NeedsSignIn", "RefreshReport"]
