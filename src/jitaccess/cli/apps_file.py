"""The apps file (``jitaccess apps apply -f FILE``): offers and applications as code,
its shape (pydantic models) and reading it into specs. Its own module so that only
``apps apply`` pays for building these pydantic models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jitaccess.app.catalog import OfferSpec
from jitaccess.app.service import AppSpec
from jitaccess.domain.durations import parse_duration
from jitaccess.domain.policy import (
    DEFAULT_APPROVAL_TIMEOUT,
    DEFAULT_BREAKGLASS_MAX,
    DEFAULT_MAX_DURATION,
    DEFAULT_ROLES,
    ApprovalMode,
    Policy,
)

AppEntry = tuple[AppSpec, str | None, bool | None]


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: ApprovalMode = ApprovalMode.AUTOMATIC
    max_duration: str = "8h"
    approvers: list[str] = Field(default_factory=list)
    approval_timeout: str = "24h"
    breakglass: list[str] = Field(default_factory=list)
    breakglass_max: str = "1h"
    #: How many approvers must approve; approvers may be people (U…) or groups (S…).
    required_approvals: int = 1
    #: Slack channel ID every request is posted to; absent or empty: no feed.
    feed_channel: str | None = None


class AppDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    scope: str
    offer: str | None = None
    publishers: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    admins: list[str] = Field(default_factory=list)
    jit_enabled: bool | None = None
    policy: PolicyDoc = Field(default_factory=PolicyDoc)
    provider: str = "log"
    provider_config: dict[str, Any] = Field(default_factory=dict)


class OfferDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    publishers: list[str]
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    standing_role: str = "Reader"
    jit_available: bool = True
    provider_config: dict[str, Any] = Field(default_factory=dict)


class AppsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offers: list[OfferDoc] = Field(default_factory=list)
    apps: list[AppDoc] = Field(default_factory=list)


@dataclass(frozen=True)
class FileProblem:
    """One thing wrong in the file: what it is about (an application or offer, else
    None), the field (``policy.max_duration``), the line, and what to change."""

    subject: str | None
    field: str | None
    line: int | None
    message: str
    #: The file's shape (YAML, keys, types): a usage error (exit 2); else a rule (exit 1).
    shape: bool = True

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                self.subject,
                self.field,
                f"line {self.line}" if self.line is not None else None,
            )
            if part
        )
        return f"{where}: {self.message}" if where else self.message


@dataclass
class AppsFile:
    """What an apps file declares, and everything wrong with it found while reading it.
    Entries with a problem are left out of ``offers`` and ``apps``; the rest can still be
    checked against the rules (:meth:`jitaccess.app.catalog.Catalog.check`)."""

    path: Path
    offers: list[OfferSpec] = field(default_factory=list)
    apps: list[AppEntry] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    #: Per application or offer name: the line of each field ("" the entry itself).
    lines: dict[str, dict[str, int]] = field(default_factory=dict)

    def locate(self, subject: str | None, field_name: str | None, message: str) -> FileProblem:
        """A rule's refusal placed in the file: the field's line, else the entry's."""
        lines = self.lines.get(subject or "", {})
        if field_name in PolicyDoc.model_fields:
            field_name = f"policy.{field_name}"  # where it is written in the file
        line = lines.get(field_name or "")
        if line is None and field_name is not None and "." in field_name:
            line = lines.get(field_name.split(".")[0])
        if line is None:
            line = lines.get("")
        return FileProblem(subject, field_name, line, message, shape=False)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also notes the line of every key and every key given
    twice in one mapping (which plain PyYAML lets the last one win)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: id(mapping) -> key -> line (1-based); the mappings are kept alive in ``_made``.
        self.key_lines: dict[int, dict[str, int]] = {}
        self.start_lines: dict[int, int] = {}
        self.duplicates: dict[int, list[tuple[str, int, int]]] = {}
        self._made: list[dict[Any, Any]] = []

    def construct_lined_map(self, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
        data: dict[Any, Any] = {}
        yield data
        lines: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in lines:
                self.duplicates.setdefault(id(data), []).append((key, line, lines[key]))
            else:
                lines[key] = line
        data.update(self.construct_mapping(node))
        self.key_lines[id(data)] = lines
        self.start_lines[id(data)] = node.start_mark.line + 1
        self._made.append(data)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_lined_map)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise typer.BadParameter(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} cannot be "
            "read; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) and apply again"
        ) from None


def load_apps(path: Path) -> AppsFile:
    """The offers and the applications (with the offer each deploys and its JIT choice)
    that the file at ``path`` declares, and every problem found in it. A file that cannot
    be read at all (missing, not UTF-8, not YAML) is a usage error at once."""
    loader = _Loader(_read_text(path))
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    finally:
        loader.dispose()
    loaded = AppsFile(path)
    if not isinstance(raw, dict):
        what = "empty" if raw is None else f"a {type(raw).__name__}"
        raise typer.BadParameter(
            f"{path} is not a valid apps file: it is {what}; it needs `apps:` and/or "
            "`offers:` lists"
        )
    _top_level(loader, raw, loaded)
    for kind, model in (("offers", OfferDoc), ("apps", AppDoc)):
        entries = raw.get(kind) or []
        if not isinstance(entries, list):
            loaded.problems.append(
                FileProblem(None, kind, _line(loader, raw, kind), f"`{kind}:` must be a list")
            )
            continue
        for index, entry in enumerate(entries):
            _entry(loader, kind, index, entry, model, loaded)
    if not raw.get("apps") and not raw.get("offers") and not loaded.problems:
        raise typer.BadParameter(f"{path} has no `apps:` or `offers:` entries")
    return loaded


def _line(loader: _Loader, mapping: dict[Any, Any], key: str | None = None) -> int | None:
    if key is not None and key in loader.key_lines.get(id(mapping), {}):
        return loader.key_lines[id(mapping)][key]
    return loader.start_lines.get(id(mapping))


def _top_level(loader: _Loader, raw: dict[Any, Any], loaded: AppsFile) -> None:
    for key in raw:
        if key not in ("apps", "offers"):
            loaded.problems.append(
                FileProblem(
                    None,
                    str(key),
                    _line(loader, raw, str(key)),
                    f"unknown key `{key}`: an apps file has `apps:` and `offers:` lists",
                )
            )
    for key, line, first in loader.duplicates.get(id(raw), []):
        loaded.problems.append(_duplicate(None, key, line, first))


def _duplicate(
    subject: str | None, key: str, line: int, first: int, prefix: str = ""
) -> FileProblem:
    return FileProblem(
        subject,
        prefix + key,
        line,
        f"`{key}` is given twice (first on line {first}); YAML would keep only the last: keep one",
    )


def _mappings(value: Any) -> Iterator[dict[Any, Any]]:
    """``value`` and every mapping nested in it."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _mappings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mappings(item)


def _entry(
    loader: _Loader,
    kind: str,
    index: int,
    entry: Any,
    model: type[AppDoc] | type[OfferDoc],
    loaded: AppsFile,
) -> None:
    """Read one application or offer, noting its lines and problems."""
    what = "application" if kind == "apps" else "offer"
    name = entry.get("name") if isinstance(entry, dict) else None
    subject = str(name) if isinstance(name, str) and name else f"{kind}[{index}]"
    if not isinstance(entry, dict):
        loaded.problems.append(
            FileProblem(subject, None, None, f"each {what} must be a mapping (name:, scope:, …)")
        )
        return
    # The line of each field, "policy.max_duration" for nested ones.
    lines = {"": _line(loader, entry) or 0}
    for key, line in loader.key_lines.get(id(entry), {}).items():
        lines[key] = line
        nested = entry.get(key)
        if isinstance(nested, dict):
            for inner, inner_line in loader.key_lines.get(id(nested), {}).items():
                lines[f"{key}.{inner}"] = inner_line
    loaded.lines.setdefault(subject, lines)
    before = len(loaded.problems)
    for mapping in _mappings(entry):
        prefix = next(
            (f"{k}." for k, v in entry.items() if v is mapping and mapping is not entry), ""
        )
        for key, line, first in loader.duplicates.get(id(mapping), []):
            loaded.problems.append(_duplicate(subject, key, line, first, prefix))
    try:
        doc = model.model_validate(entry)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or None
            top = str(error["loc"][0]) if error["loc"] else ""
            line = lines.get(where or "", lines.get(top, lines[""]))
            loaded.problems.append(FileProblem(subject, where, line, error["msg"]))
        return
    if isinstance(doc, OfferDoc):
        if len(loaded.problems) == before:
            loaded.offers.append(
                OfferSpec(
                    name=doc.name,
                    publishers=tuple(doc.publishers),
                    roles=tuple(doc.roles),
                    standing_role=doc.standing_role,
                    jit_available=doc.jit_available,
                    provider_config=doc.provider_config,
                )
            )
        return
    if doc.offer is None and not doc.publishers:
        loaded.problems.append(
            FileProblem(
                subject,
                "publishers",
                lines[""],
                "needs `offer:` (deploy an offer) or `publishers:` (its own publishers)",
            )
        )
    durations = {}
    for key, default in (
        ("max_duration", DEFAULT_MAX_DURATION),
        ("approval_timeout", DEFAULT_APPROVAL_TIMEOUT),
        ("breakglass_max", DEFAULT_BREAKGLASS_MAX),
    ):
        try:
            durations[key] = parse_duration(getattr(doc.policy, key))
        except ValueError as exc:
            durations[key] = default
            field_name = f"policy.{key}"
            loaded.problems.append(
                FileProblem(subject, field_name, lines.get(field_name, lines[""]), str(exc))
            )
    if len(loaded.problems) > before:
        return
    policy = Policy(
        mode=doc.policy.mode,
        max_duration=durations["max_duration"],
        approvers=tuple(doc.policy.approvers),
        approval_timeout=durations["approval_timeout"],
        breakglass=tuple(doc.policy.breakglass),
        breakglass_max=durations["breakglass_max"],
        required_approvals=doc.policy.required_approvals,
        feed_channel=doc.policy.feed_channel,
    )
    spec = AppSpec(
        name=doc.name,
        scope=doc.scope,
        publishers=tuple(doc.publishers),
        roles=tuple(doc.roles),
        admins=tuple(doc.admins),
        policy=policy,
        provider=doc.provider,
        provider_config=doc.provider_config,
    )
    loaded.apps.append((spec, doc.offer, doc.jit_enabled))
