"""The Kubernetes manifests agree with the code: every variable they set is a real
setting, each ``serve --role`` would find what it needs, the probes hit the real
endpoints on the real port, and the pieces (Service, PDBs, kustomization) point at each
other: the Service at the web pods only, one PDB per Deployment."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from jitaccess.roles import Role
from jitaccess.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests" / "kubernetes"
#: Templates that must never be applied as they are (their values are placeholders).
NOT_KUSTOMIZED = {"secret.example.yaml"}

Doc = dict[str, Any]

#: The Deployments, one per role (the role ``all`` is for one process, not Kubernetes).
ROLES = (Role.WEB, Role.WORKER)
SETTING_NAMES = {str(field.validation_alias) for field in Settings.model_fields.values()}
DEFAULT_PORT = Settings.model_fields["port"].default


# -- loading -----------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted([*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("*.yml")])


def load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_all() -> list[Doc]:
    return [doc for path in manifest_files() for doc in load_docs(path)]


def only(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def role_of(deployment: Doc) -> str | None:
    """The role a Deployment runs: ``serve --role ROLE`` (None for anything else)."""
    args = [container.get("args", container.get("command")) for container in containers(deployment)]
    if len(args) == 1 and isinstance(args[0], list) and args[0][:2] == ["serve", "--role"]:
        return str(args[0][2]) if len(args[0]) == 3 else None
    return None


def deployment_for(docs: list[Doc], role: Role) -> Doc:
    found = [d for d in docs if d.get("kind") == "Deployment" and role_of(d) == role]
    assert len(found) == 1, (
        f"expected one Deployment running serve --role {role}, found {len(found)}"
    )
    return found[0]


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


# -- the checks, as functions that return problems (so a broken copy can be tested) --
def structure_problems(doc: Doc) -> list[str]:
    problems = [f"missing {key}" for key in ("apiVersion", "kind") if not doc.get(key)]
    if not (doc.get("metadata") or {}).get("name"):
        problems.append("missing metadata.name")
    return problems


def env_names(workload: Doc, docs: list[Doc]) -> dict[str, str | dict[str, str]]:
    """Every variable a workload's containers get: name -> literal value, or the
    ``{"secret": name, "key": key}`` it is read from. ConfigMaps are resolved from docs."""
    config_maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    names: dict[str, str | dict[str, str]] = {}
    for container in containers(workload):
        for source in container.get("envFrom", []):
            assert "prefix" not in source, "a prefix would rename the settings"
            if "configMapRef" in source:
                data = config_maps[source["configMapRef"]["name"]].get("data") or {}
                names.update({key: str(value) for key, value in data.items()})
            else:
                raise AssertionError(f"unexpected envFrom source {source}")
        for var in container.get("env", []):
            if "value" in var:
                names[var["name"]] = str(var["value"])
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                names[var["name"]] = {"secret": ref["name"], "key": ref["key"]}
    return names


def unknown_env_names(docs: list[Doc]) -> list[str]:
    """Variables set anywhere (ConfigMaps, env of every workload) that no setting reads."""
    set_names: set[str] = set()
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            set_names |= set((doc.get("data") or {}).keys())
        if doc.get("kind") in {"Deployment", "Job"}:
            set_names |= set(env_names(doc, docs))
    return sorted(set_names - SETTING_NAMES)


def optional_refs(workload: Doc) -> set[str]:
    """Variables read from a Secret key with ``optional: true`` (unset when it is absent)."""
    return {
        var["name"]
        for container in containers(workload)
        for var in container.get("env", [])
        if var.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")
    }


def commented_secret_keys() -> dict[str, str]:
    """Keys the example Secret shows commented out (``# KEY: value``): to uncomment
    for a variant, e.g. Socket Mode."""
    text = (MANIFESTS / "secret.example.yaml").read_text()
    return dict(re.findall(r"^  # ([A-Z][A-Z0-9_]+): (\S+)$", text, re.M))


def secret_ref_problems(docs: list[Doc]) -> list[str]:
    """Every secretKeyRef names the example Secret and a key it has (or, for an optional
    reference, shows commented out), and every key of the example Secret is used."""
    secret = only(docs, "Secret")
    keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
    used: set[str] = set()
    problems = []
    for workload in (d for d in docs if d.get("kind") in {"Deployment", "Job"}):
        optional = optional_refs(workload)
        for name, value in env_names(workload, docs).items():
            if isinstance(value, dict):
                used.add(value["key"])
                known = keys | (set(commented_secret_keys()) if name in optional else set())
                if value["secret"] != secret["metadata"]["name"] or value["key"] not in known:
                    problems.append(f"{workload['kind']} {name}: no such secret key {value}")
    problems += [f"Secret key {key} is never used" for key in sorted(keys - used)]
    return problems


def deployment_settings(
    docs: list[Doc], role: Role = Role.WEB, *, uncomment: tuple[str, ...] = ()
) -> Settings:
    """The Settings ``serve --role role`` would see in its Deployment: secret references resolved
    from the example Secret (a dummy where it has no value; unset where an optional key
    is absent), with the commented-out keys ``uncomment`` filled in."""
    secret = only(docs, "Secret")
    secret_values = {k: str(v) for k, v in (secret.get("stringData") or {}).items()}
    secret_values |= {k: v for k, v in commented_secret_keys().items() if k in uncomment}
    deployment = deployment_for(docs, role)
    optional = optional_refs(deployment)
    values: dict[str, str] = {"JITACCESS_ROLE": str(role)}
    for name, value in env_names(deployment, docs).items():
        if not isinstance(value, dict):
            values[name] = value
        elif value["key"] in secret_values:
            values[name] = secret_values[value["key"]]
        elif name not in optional:
            values[name] = "dummy"
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def socket_mode_problems(docs: list[Doc]) -> list[str]:
    """Socket Mode as the README documents it: SLACK_APP_TOKEN from the Secret, optional
    (HTTP mode has none), shown in the example Secret; with it serve needs no signing
    secret, without it serve is in HTTP mode. (The web side: a worker answers no Slack.)"""
    deployment = deployment_for(docs, Role.WEB)
    refs = env_names(deployment, docs)
    problems = []
    if not isinstance(refs.get("SLACK_APP_TOKEN"), dict):
        problems.append("the web Deployment does not read SLACK_APP_TOKEN from the Secret")
    for name in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        if name in refs and name not in optional_refs(deployment):
            problems.append(f"{name} is not optional: one of the two modes cannot start")
    if "SLACK_APP_TOKEN" not in commented_secret_keys():
        problems.append("secret.example.yaml does not show SLACK_APP_TOKEN")
    http_mode = deployment_settings(docs)
    if http_mode.slack_app_token is not None:
        problems.append("the example Secret as it stands is not HTTP mode")
    socket = deployment_settings(docs, uncomment=("SLACK_APP_TOKEN",))
    socket_without_secret = socket.model_copy(update={"slack_signing_secret": None})
    if not (socket.slack_app_token or "").startswith("xapp-"):
        problems.append("with SLACK_APP_TOKEN uncommented, serve does not see an xapp- token")
    elif socket_without_secret.missing_slack_settings():
        problems.append(
            "Socket Mode still needs: " + "; ".join(socket_without_secret.missing_slack_settings())
        )
    return problems


def serve_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for role in ROLES:
        settings = deployment_settings(docs, role)
        problems += [f"{role}: {line}" for line in settings.missing_slack_settings()]
        if not settings.database_url.startswith("postgresql"):
            problems.append(
                f"{role}: JITACCESS_DATABASE_URL is {settings.database_url!r}, not PostgreSQL"
            )
    return problems


def container_port(docs: list[Doc]) -> int:
    """The port serve listens on: JITACCESS_PORT from the ConfigMap, else the default."""
    data = only(docs, "ConfigMap").get("data") or {}
    return int(data.get("JITACCESS_PORT", DEFAULT_PORT))


def resolve_port(container: Doc, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def deployment_problems(docs: list[Doc], role: Role = Role.WEB) -> list[str]:
    deployment = deployment_for(docs, role)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    port = container_port(docs)
    problems = []
    if spec.get("replicas") != 2:
        problems.append(f"replicas is {spec.get('replicas')}, not 2")
    if spec.get("strategy", {}).get("type") != "RollingUpdate":
        problems.append("the strategy is not RollingUpdate")
    (container,) = containers(deployment)
    if port not in [p["containerPort"] for p in container.get("ports", [])]:
        problems.append(f"the container does not expose JITACCESS_PORT {port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = container.get(probe, {}).get("httpGet", {})
        if http.get("path") != path:
            problems.append(f"{probe} checks {http.get('path')}, not {path}")
        if resolve_port(container, http.get("port", "")) != port:
            problems.append(f"{probe} checks port {http.get('port')}, not {port}")
    annotations = spec["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true":
        problems.append("pods are not marked for scraping")
    if annotations.get("prometheus.io/path") != "/metrics":
        problems.append("the scrape path is not /metrics")
    if annotations.get("prometheus.io/port") != str(port):
        problems.append(f"the scrape port is not {port}")
    if "memory" not in container.get("resources", {}).get("limits", {}):
        problems.append("no memory limit")
    problems += [f"Deployment: {p}" for p in security_problems(pod, container)]
    return problems


def role_problems(docs: list[Doc]) -> list[str]:
    """Every Deployment runs ``serve --role web`` or ``--role worker``, one of each, with
    pod labels of their own; each gets only the credentials its side uses."""
    problems = []
    for deployment in (d for d in docs if d.get("kind") == "Deployment"):
        if role_of(deployment) not in {str(role) for role in ROLES}:
            runs = [c.get("args", c.get("command")) for c in containers(deployment)]
            problems.append(
                f"Deployment {deployment['metadata']['name']} runs {runs}, "
                "not serve --role web|worker"
            )
    found = {role_of(d) for d in docs if d.get("kind") == "Deployment"}
    problems += [f"no Deployment runs serve --role {role}" for role in ROLES if role not in found]
    if problems:
        return problems
    web, worker = (deployment_for(docs, role) for role in ROLES)
    if selects(pod_labels(web), pod_labels(worker)) or selects(pod_labels(worker), pod_labels(web)):
        problems.append("web and worker pods cannot be told apart by their labels")
    worker_env = env_names(worker, docs)
    problems += [
        f"the worker reads {name}, which only answering Slack needs"
        for name in ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
        if name in worker_env
    ]
    problems += [
        f"the web reads {name}, which only calling backends needs"
        for name in env_names(web, docs)
        if name.startswith("AZURE_")
    ]
    return problems


def security_problems(pod: Doc, container: Doc) -> list[str]:
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    problems = []
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        problems.append("may run as root")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
        problems.append("no non-zero runAsUser")
    if not sc.get("readOnlyRootFilesystem"):
        problems.append("the root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation is allowed")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities are not all dropped")
    return problems


def job_problems(docs: list[Doc]) -> list[str]:
    job = only(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = containers(job)
    deployment_images = {containers(d)[0]["image"] for d in docs if d.get("kind") == "Deployment"}
    problems = []
    if container.get("args", container.get("command")) != ["db", "upgrade"]:
        problems.append(f"the Job runs {container.get('args')}, not db upgrade")
    if {container["image"]} != deployment_images:
        problems.append("the Job and the Deployments run different images")
    if "JITACCESS_DATABASE_URL" not in env_names(job, docs):
        problems.append("the Job has no JITACCESS_DATABASE_URL")
    if pod.get("restartPolicy") not in {"Never", "OnFailure"}:
        problems.append("a Job pod must not restart Always")
    problems += [f"Job: {p}" for p in security_problems(pod, container)]
    return problems


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def wiring_problems(docs: list[Doc]) -> list[str]:
    web, worker = (deployment_for(docs, role) for role in ROLES)
    (container,) = containers(web)
    service = only(docs, "Service")
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    problems = []
    for role, deployment in zip(ROLES, (web, worker), strict=True):
        if not selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment)):
            problems.append(f"the {role} Deployment's selector does not match its pods")
        budgets = [
            p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        ]
        if len(budgets) != 1:
            problems.append(f"{len(budgets)} PodDisruptionBudgets select the {role} pods, not 1")
        elif budgets[0]["spec"].get("minAvailable") != 1:
            problems.append(f"the {role} PodDisruptionBudget's minAvailable is not 1")
    if not selects(service["spec"]["selector"], pod_labels(web)):
        problems.append("the Service does not select the web pods")
    if selects(service["spec"]["selector"], pod_labels(worker)):
        problems.append("the Service selects the worker pods, which answer no Slack request")
    if service["spec"].get("type", "ClusterIP") != "ClusterIP":
        problems.append("the Service is not ClusterIP")
    ports = service["spec"]["ports"]
    if [p["port"] for p in ports] != [80]:
        problems.append("the Service does not listen on 80")
    if any(
        resolve_port(container, p.get("targetPort", p["port"])) != container_port(docs)
        for p in ports
    ):
        problems.append("the Service does not target the container port")
    return problems


def kustomization_problems(listed: list[str], files: list[str]) -> list[str]:
    expected = sorted(set(files) - {"kustomization.yaml"} - NOT_KUSTOMIZED)
    problems = [f"{name} is not in kustomization.yaml" for name in expected if name not in listed]
    problems += [f"{name} is listed but does not exist" for name in listed if name not in files]
    problems += [f"{name} must not be applied" for name in listed if name in NOT_KUSTOMIZED]
    return problems


# -- the manifests as they are -----------------------------------------------------
@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_all()


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the manifests count: clear any setting in this process's environment."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_file_parses_and_names_itself(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert structure_problems(doc) == []


def test_the_expected_objects_are_there(docs: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Job",
            "Kustomization",
            "Namespace",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )


@pytest.mark.parametrize("role", ROLES, ids=str)
def test_deployment(docs: list[Doc], role: Role) -> None:
    assert deployment_problems(docs, role) == []


def test_one_deployment_per_role_with_only_its_credentials(docs: list[Doc]) -> None:
    assert role_problems(docs) == []


def test_every_variable_set_is_a_setting(docs: list[Doc]) -> None:
    assert unknown_env_names(docs) == []


def test_secret_references_match_the_example_secret(docs: list[Doc]) -> None:
    assert secret_ref_problems(docs) == []


@pytest.mark.parametrize("role", ROLES, ids=str)
def test_serve_has_everything_it_needs_on_postgresql(docs: list[Doc], role: Role) -> None:
    settings = deployment_settings(docs, role)
    assert settings.role is role
    assert settings.missing_slack_settings() == []
    assert settings.database_url.startswith("postgresql")
    assert settings.log_format == "json"
    assert serve_problems(docs) == []
    set_by_deployment = env_names(deployment_for(docs, role), docs)
    for name in ("SLACK_BOT_TOKEN", "JITACCESS_DATABASE_URL"):
        assert name in set_by_deployment
    assert ("SLACK_SIGNING_SECRET" in set_by_deployment) is (role is Role.WEB)


def test_socket_mode_works_as_the_readme_says(docs: list[Doc]) -> None:
    """Uncommenting SLACK_APP_TOKEN in the Secret runs serve in Socket Mode; as shipped, HTTP."""
    assert socket_mode_problems(docs) == []


def test_a_missing_or_required_app_token_is_reported(docs: list[Doc]) -> None:
    """A Deployment without SLACK_APP_TOKEN, or one that requires it, is reported."""
    broken = copy.deepcopy(docs)
    container = deployment_container(broken)
    container["env"] = [v for v in container["env"] if v["name"] != "SLACK_APP_TOKEN"]
    assert socket_mode_problems(broken) == [
        "the web Deployment does not read SLACK_APP_TOKEN from the Secret",
        "with SLACK_APP_TOKEN uncommented, serve does not see an xapp- token",
    ]
    required = copy.deepcopy(docs)
    for var in deployment_container(required)["env"]:
        if var["name"] == "SLACK_APP_TOKEN":
            del var["valueFrom"]["secretKeyRef"]["optional"]
    assert socket_mode_problems(required) == [
        "SLACK_APP_TOKEN is not optional: one of the two modes cannot start",
        "the example Secret as it stands is not HTTP mode",
    ]


def test_migration_job(docs: list[Doc]) -> None:
    assert job_problems(docs) == []


def test_service_pdb_and_selectors_agree(docs: list[Doc]) -> None:
    assert wiring_problems(docs) == []


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = [path.name for path in manifest_files()]
    assert kustomization_problems(kustomization["resources"], files) == []
    assert kustomization.get("namespace") == only(load_all(), "Namespace")["metadata"]["name"]


# -- the checks catch what they are for ---------------------------------------------
def deployment_container(docs: list[Doc], role: Role = Role.WEB) -> Doc:
    return containers(deployment_for(docs, role))[0]


def test_an_unknown_variable_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    deployment_container(broken)["env"].append({"name": "JITACCESS_PROT", "value": "3000"})
    only(broken, "ConfigMap")["data"]["JITACCESS_LOGFORMAT"] = "json"
    assert unknown_env_names(broken) == ["JITACCESS_LOGFORMAT", "JITACCESS_PROT"]


def test_a_missing_required_setting_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    container = deployment_container(broken)
    container["env"] = [v for v in container["env"] if v["name"] != "SLACK_SIGNING_SECRET"]
    only(broken, "Secret")["stringData"]["JITACCESS_DATABASE_URL"] = "sqlite:///./jitaccess.db"
    problems = serve_problems(broken)
    assert len(problems) == 3
    assert problems[0].startswith("web: SLACK_SIGNING_SECRET")
    assert "web: JITACCESS_DATABASE_URL" in problems[1] and "not PostgreSQL" in problems[1]
    assert "worker: JITACCESS_DATABASE_URL" in problems[2]


def test_a_wrong_probe_or_port_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    container = deployment_container(broken)
    container["livenessProbe"]["httpGet"]["path"] = "/readyz"
    only(broken, "ConfigMap")["data"]["JITACCESS_PORT"] = "8080"
    problems = deployment_problems(broken)
    assert "livenessProbe checks /readyz, not /healthz" in problems
    assert "the container does not expose JITACCESS_PORT 8080" in problems
    assert "the Service does not target the container port" in wiring_problems(broken)


def test_running_as_root_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    deployment = deployment_for(broken, Role.WEB)
    deployment["spec"]["template"]["spec"]["securityContext"] = {}
    deployment_container(broken)["securityContext"] = {"runAsUser": 0}
    problems = deployment_problems(broken)
    assert "Deployment: may run as root" in problems
    assert "Deployment: no non-zero runAsUser" in problems


def test_a_pdb_that_selects_nothing_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    pdbs = [d for d in broken if d.get("kind") == "PodDisruptionBudget"]
    web_pdb = next(p for p in pdbs if p["metadata"]["name"] == "jitaccess-web")
    web_pdb["spec"]["selector"]["matchLabels"] = {"app": "other"}
    assert wiring_problems(broken) == ["0 PodDisruptionBudgets select the web pods, not 1"]


def test_a_service_that_also_selects_workers_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    only(broken, "Service")["spec"]["selector"] = {"app.kubernetes.io/name": "jitaccess"}
    assert wiring_problems(broken) == [
        "the Service selects the worker pods, which answer no Slack request"
    ]


def test_a_deployment_without_a_role_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    deployment_container(broken, Role.WORKER)["args"] = ["serve"]
    assert role_problems(broken) == [
        "Deployment jitaccess-worker runs [['serve']], not serve --role web|worker",
        "no Deployment runs serve --role worker",
    ]


def test_credentials_on_the_wrong_side_are_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    web, worker = (deployment_container(broken, role) for role in ROLES)
    worker["env"].append(next(v for v in web["env"] if v["name"] == "SLACK_SIGNING_SECRET"))
    web["env"].append(next(v for v in worker["env"] if v["name"] == "AZURE_CLIENT_SECRET"))
    assert role_problems(broken) == [
        "the worker reads SLACK_SIGNING_SECRET, which only answering Slack needs",
        "the web reads AZURE_CLIENT_SECRET, which only calling backends needs",
    ]


def test_a_worker_without_probes_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    del deployment_container(broken, Role.WORKER)["readinessProbe"]
    assert "readinessProbe checks None, not /readyz" in deployment_problems(broken, Role.WORKER)


def test_a_dangling_secret_reference_is_reported(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    deployment_container(broken)["env"].append(
        {
            "name": "SLACK_APP_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "jitaccess", "key": "NOPE"}},
        }
    )
    assert secret_ref_problems(broken) == [
        "Deployment SLACK_APP_TOKEN: no such secret key {'secret': 'jitaccess', 'key': 'NOPE'}"
    ]


def test_an_unlisted_or_unsafe_kustomization_is_reported() -> None:
    files = ["deployment.yaml", "kustomization.yaml", "secret.example.yaml", "service.yaml"]
    assert kustomization_problems(["deployment.yaml", "service.yaml"], files) == []
    assert kustomization_problems(["deployment.yaml", "secret.example.yaml"], files) == [
        "service.yaml is not in kustomization.yaml",
        "secret.example.yaml must not be applied",
    ]


def test_a_file_without_a_name_is_reported() -> None:
    assert structure_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}) == [
        "missing metadata.name"
    ]
