"""Microsoft Graph as jitaccess's own identity: the real ``requests`` over HTTPS against
the fake Graph, with the sandbox's service credential."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fakes.fake_arm import FakeCredential
from fakes.fake_entra import FakeEntra
from jitaccess.answers import REJECTED
from jitaccess.domain.native import ExternalLookupFailed
from jitaccess.providers.graph import GraphDirectory

AVA = "0f1e2d3c-4b5a-4697-8877-665544332211"
BEN = "1a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9"
CARA = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
APPROVERS = "9a8b7c6d-5e4f-4321-8765-43210fedcba9"
NESTED = "8b7c6d5e-4f30-4210-9876-543210fedcba"
EMPTY = "7c6d5e4f-3021-4098-8765-43210fedcbaa"


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra(page_size=2) as fake:
        fake.add_user(AVA, "ava@contoso.example", "Ava Adams", mail="ava.adams@contoso.example")
        fake.add_user(BEN, "ben@contoso.example", "Ben Brown")  # no mailbox
        fake.add_user(CARA, "cara@contoso.example", "Cara Cole", mail="cara@contoso.example")
        fake.add_group(NESTED, [CARA])
        fake.add_group(APPROVERS, [AVA, BEN, NESTED, AVA])
        fake.add_group(EMPTY, [])
        yield fake


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
def graph(entra: FakeEntra, credential: FakeCredential) -> GraphDirectory:
    return GraphDirectory(
        credential, base_url=entra.graph_url, verify=str(entra.ca_file), timeout=5
    )


def rejected() -> float:
    return sum(
        sample.value
        for metric in REJECTED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["service"] == "graph"
    )


def test_a_user_s_mail(graph: GraphDirectory, credential: FakeCredential) -> None:
    assert graph.user_email(AVA) == "ava.adams@contoso.example"
    assert credential.scopes_requested == [("https://graph.microsoft.com/.default",)]


def test_a_user_without_mail_is_reached_by_upn(graph: GraphDirectory) -> None:
    assert graph.user_email(BEN) == "ben@contoso.example"


def test_no_such_user_is_none(graph: GraphDirectory) -> None:
    assert graph.user_email("00000000-0000-0000-0000-000000000000") is None


def test_a_path_in_an_id_stays_an_id(graph: GraphDirectory, entra: FakeEntra) -> None:
    assert graph.user_email("../groups/" + APPROVERS) is None
    assert entra.requests[-1][1].startswith("/v1.0/users/")


def test_group_members_across_pages_and_nested_groups(
    graph: GraphDirectory, entra: FakeEntra
) -> None:
    assert graph.group_member_ids(APPROVERS) == frozenset({AVA, BEN, CARA})
    pages = [path for method, path in entra.requests if "transitiveMembers" in path]
    assert len(pages) == 2  # three users, two a page


def test_an_empty_group(graph: GraphDirectory) -> None:
    assert graph.group_member_ids(EMPTY) == frozenset()


def test_no_such_group_is_a_failed_lookup(graph: GraphDirectory) -> None:
    with pytest.raises(ExternalLookupFailed, match="Graph has no group"):
        graph.group_member_ids("00000000-0000-0000-0000-000000000000")


def test_paging_is_bounded(entra: FakeEntra, credential: FakeCredential) -> None:
    graph = GraphDirectory(
        credential, base_url=entra.graph_url, verify=str(entra.ca_file), max_pages=1
    )
    with pytest.raises(ExternalLookupFailed, match="more than 1 pages"):
        graph.group_member_ids(APPROVERS)


def test_a_refused_token_is_a_failed_lookup_not_no_user(entra: FakeEntra) -> None:
    class WrongCredential(FakeCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            token = super().get_token(*scopes, **kwargs)
            return type(token)("not-a-graph-token", token.expires_on)

    graph = GraphDirectory(WrongCredential(), base_url=entra.graph_url, verify=str(entra.ca_file))
    with pytest.raises(ExternalLookupFailed, match="401 InvalidAuthenticationToken") as err:
        graph.user_email(AVA)
    assert "not-a-graph-token" not in str(err.value)


def test_an_app_only_token_from_entra_works(entra: FakeEntra) -> None:
    """The client-credentials path: azure-identity against the fake's token endpoint."""
    from azure.identity import ClientSecretCredential

    from fakes.fake_entra import CLIENT_ID, CLIENT_SECRET, TENANT_ID

    credential = ClientSecretCredential(
        TENANT_ID,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=entra.base_url,
        connection_verify=str(entra.ca_file),
        disable_instance_discovery=True,
    )
    graph = GraphDirectory(credential, base_url=entra.graph_url, verify=str(entra.ca_file))
    assert graph.user_email(CARA) == "cara@contoso.example"


def test_an_untrusted_certificate_is_a_failed_lookup(
    entra: FakeEntra, credential: FakeCredential
) -> None:
    graph = GraphDirectory(credential, base_url=entra.graph_url, timeout=5)
    with pytest.raises(ExternalLookupFailed, match="did not answer"):
        graph.user_email(AVA)


def test_a_next_link_elsewhere_is_refused_and_gets_no_token(
    graph: GraphDirectory, entra: FakeEntra
) -> None:
    entra.answer_next(
        {"value": [{"id": AVA}], "@odata.nextLink": "https://evil.example/v1.0/steal"},
        path="transitiveMembers",
    )
    with pytest.raises(ExternalLookupFailed, match="another host"):
        graph.group_member_ids(APPROVERS)


USERS: dict[str, Any] = {
    "a list": [{"id": AVA}],
    "null": None,
    "a string": "x",
    "not JSON": b"<html>",
    "no id": {"mail": "a@b.c", "userPrincipalName": "a@b.c"},
    "another user's id": {"id": BEN, "mail": None, "userPrincipalName": "ben@contoso.example"},
    "mail as a number": {"id": AVA, "mail": 7, "userPrincipalName": "ava@contoso.example"},
    "mail as a list": {"id": AVA, "mail": ["a"], "userPrincipalName": "ava@contoso.example"},
    "no upn": {"id": AVA, "mail": None},
    "an empty upn": {"id": AVA, "mail": None, "userPrincipalName": ""},
}
MEMBERS: dict[str, Any] = {
    "a list": [{"id": AVA}],
    "no value": {},
    "value null": {"value": None},
    "value an object": {"value": {"id": AVA}},
    "items that are strings": {"value": [AVA]},
    "an item without id": {"value": [{"displayName": "Ava"}]},
    "an id number": {"value": [{"id": 7}]},
    "a nextLink number": {"value": [], "@odata.nextLink": 7},
    "not JSON": b"<html>",
}


@pytest.mark.parametrize("shape", USERS)
def test_a_strange_user_answer_is_a_failed_lookup(
    graph: GraphDirectory, entra: FakeEntra, shape: str
) -> None:
    before = rejected()
    entra.answer_next(USERS[shape], path="/v1.0/users/")
    with pytest.raises(ExternalLookupFailed, match="graph answered getUser"):
        graph.user_email(AVA)
    assert rejected() == before + 1


@pytest.mark.parametrize("shape", MEMBERS)
def test_a_strange_members_answer_is_a_failed_lookup(
    graph: GraphDirectory, entra: FakeEntra, shape: str
) -> None:
    before = rejected()
    entra.answer_next(MEMBERS[shape], path="transitiveMembers")
    with pytest.raises(ExternalLookupFailed, match="listGroupTransitiveMemberUsers"):
        graph.group_member_ids(APPROVERS)
    assert rejected() == before + 1


@pytest.mark.parametrize("status", [403, 429, 500, 503])
def test_a_refusal_is_a_failed_lookup(graph: GraphDirectory, entra: FakeEntra, status: int) -> None:
    entra.answer_next(
        {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}},
        path="/v1.0/",
        status=status,
    )
    with pytest.raises(ExternalLookupFailed, match=f"Graph answered {status}"):
        graph.user_email(AVA)


def test_a_404_that_is_not_graph_s_is_a_failed_lookup(
    graph: GraphDirectory, entra: FakeEntra
) -> None:
    entra.answer_next(b"<html>not found</html>", path="/v1.0/users/", status=404)
    with pytest.raises(ExternalLookupFailed, match="Graph answered 404"):
        graph.user_email(AVA)
