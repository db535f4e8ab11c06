"""The estate file: components, their commands, probes, files and dependencies.

An estate file is YAML validated by pydantic models with `extra="forbid"`, so a typo is named
with its place in the file (`components.web.comand: Extra inputs are not permitted`) before
anything starts. Paths in the file are relative to the file's folder. The JSON Schema of the
file is published as `estate.schema.json` (see `export_schema`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SECRET_SCAN_BYTES = 1 << 20
_NAME_RULE = "letters, digits, '_', '.', '-' (up to 63 characters, starting with a letter or digit)"


class EstateError(Exception):
    """An estate file that cannot be used, or a request that names something the estate lacks."""


class Probe(BaseModel):
    """One health check of a component: exactly one of `http`, `tcp` or `command`."""

    model_config = ConfigDict(extra="forbid")

    http: str | None = Field(default=None, description="URL that must answer with `expect_status`.")
    tcp: str | None = Field(default=None, description="host:port that must accept a connection.")
    command: list[str] | None = Field(default=None, description="Command that must exit 0 within timeout_s.")
    expect_status: int = Field(default=200, ge=100, le=599)
    latency_budget_ms: float | None = Field(
        default=None, gt=0, description="An HTTP answer slower than this is reported as slow_response."
    )
    timeout_s: float = Field(default=2.0, gt=0, le=300)

    @field_validator("http")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v

    @field_validator("tcp")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return None
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not host:port")
        return v

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("the probe command is empty")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Probe:
        kinds = [k for k in ("http", "tcp", "command") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a probe needs exactly one of http, tcp, command (got {kinds or 'none'})")
        return self

    @property
    def kind(self) -> Literal["http", "tcp", "command"]:
        if self.http is not None:
            return "http"
        return "tcp" if self.tcp is not None else "command"

    @property
    def target(self) -> str:
        """What the probe checks, as text."""
        if self.http is not None:
            return self.http
        if self.tcp is not None:
            return self.tcp
        return " ".join(self.command or [])


class DataDir(BaseModel):
    """A folder the component writes data to; `clean_dir` may act inside it."""

    model_config = ConfigDict(extra="forbid")

    path: str
    budget_mb: float | None = Field(default=None, gt=0, description="Over this size: disk_over_budget.")


class Releases(BaseModel):
    """Versioned release folders behind a `current` symlink, so `rollback_release` can switch back."""

    model_config = ConfigDict(extra="forbid")

    dir: str = Field(description="The folder holding one sub-folder per release (e.g. api/releases).")
    current: str = Field(description="The symlink to the release in use (e.g. api/current -> releases/v1).")


class Scale(BaseModel):
    """How many worker processes the component may run; it reads the number from AGENTHEAL_REPLICAS."""

    model_config = ConfigDict(extra="forbid")

    min: int = Field(default=1, ge=1, le=64)
    max: int = Field(ge=1, le=64)
    replicas: int | None = Field(default=None, description="At the first start; default `min`.")

    @model_validator(mode="after")
    def _in_range(self) -> Scale:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.replicas is not None and not self.min <= self.replicas <= self.max:
            raise ValueError(f"replicas {self.replicas} is outside min {self.min} .. max {self.max}")
        return self

    @property
    def initial(self) -> int:
        return self.replicas if self.replicas is not None else self.min


class Queue(BaseModel):
    """A folder of pending work items the component consumes; one waiting too long is queue_stalled."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The folder whose files are the items waiting to be consumed.")
    stall_after_s: float = Field(default=60.0, gt=0, description="An item older than this: queue_stalled.")


def _scalars_to_text(v: Any) -> Any:
    # YAML reads `8080` as an int; a command line or an environment value is text either way.
    if isinstance(v, list):
        return [str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for x in v]
    if isinstance(v, dict):
        return {
            k: str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for k, x in v.items()
        }
    return v


class Component(BaseModel):
    """One part of the estate: a process started from `command`, with its probes and files."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1, description="argv; the first word is looked up on PATH.")
    workdir: str = "."
    env: dict[str, str] = Field(default_factory=dict, description="Added to agentheal's own environment.")
    port: int | None = Field(default=None, gt=0, lt=65536, description="With no probes: a TCP probe on it.")
    probes: list[Probe] = Field(default_factory=list)
    logs: list[str] = Field(default_factory=list, description="The first one receives stdout and stderr.")
    configs: list[str] = Field(default_factory=list)
    data: list[DataDir | str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    log_budget_mb: float | None = Field(default=None, gt=0)
    memory_budget_mb: float | None = Field(default=None, gt=0)
    start_timeout_s: float = Field(default=10.0, gt=0, le=600)
    releases: Releases | None = Field(default=None, description="Release folders; rollback_release.")
    flags: str | None = Field(default=None, description="A JSON object of feature flags; set_flag edits it.")
    scale: Scale | None = Field(default=None, description="Worker processes it may run; scale sets them.")
    locks: list[str] = Field(
        default_factory=list, description="Lock files holding a pid; remove_stale_lock removes dead ones."
    )
    queue: Queue | None = Field(default=None, description="The work queue it consumes: queue_stalled.")
    description: str = ""
    tags: list[str] = Field(default_factory=list)

    _to_text = field_validator("command", "env", mode="before")(_scalars_to_text)

    @field_validator("command")
    @classmethod
    def _first_word(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the command's first word is empty")
        return v

    @property
    def data_dirs(self) -> list[DataDir]:
        return [d if isinstance(d, DataDir) else DataDir(path=d) for d in self.data]

    @property
    def effective_probes(self) -> list[Probe]:
        """The declared probes; with none, a TCP probe on `port` when one is declared."""
        if self.probes or self.port is None:
            return list(self.probes)
        return [Probe(tcp=f"127.0.0.1:{self.port}")]


class Estate(BaseModel):
    """The system being healed. `root` is the estate file's folder; paths resolve against it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    components: dict[str, Component]
    root: SkipJsonSchema[Path] = Field(default=Path("."), exclude=True)
    _secrets_registered: bool = PrivateAttr(default=False)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"estate name {v!r} must use {_NAME_RULE}")
        return v

    @field_validator("components")
    @classmethod
    def _components_ok(cls, v: dict[str, Component]) -> dict[str, Component]:
        if not v:
            raise ValueError("an estate needs at least one component")
        bad = [n for n in v if not _NAME.match(n)]
        if bad:
            raise ValueError(f"component names {bad} must use {_NAME_RULE}")
        return v

    @field_validator("root")
    @classmethod
    def _root_absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _dependencies_known(self) -> Estate:
        unknown = [
            f"{name} depends on unknown component {dep!r}"
            for name, comp in self.components.items()
            for dep in comp.depends_on
            if dep not in self.components
        ]
        if unknown:
            raise ValueError("; ".join(unknown))
        self.order()  # raises on a cycle
        return self

    def component(self, name: str) -> Component:
        """The component called `name`; EstateError naming the known ones otherwise."""
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(sorted(self.components))
            raise EstateError(f"estate {self.name!r} has no component {name!r} (known: {known})") from None

    def path(self, relative: str) -> Path:
        """A path from the estate file, resolved against the file's folder (absolute paths stay)."""
        return (self.root / Path(relative).expanduser()).resolve()

    def order(self) -> list[str]:
        """Component names in dependency order (dependencies first); EstateError on a cycle."""
        done: list[str] = []
        state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                raise EstateError(f"dependency cycle: {' -> '.join(cycle)}")
            state[name] = 1
            for dep in self.components[name].depends_on:
                visit(dep, [*path, name])
            state[name] = 2
            done.append(name)

        for name in self.components:
            visit(name, [])
        return done

    def dependents(self, name: str) -> list[str]:
        """Components that depend on `name` directly."""
        return [n for n, c in self.components.items() if name in c.depends_on]

    def register_secrets(self) -> None:
        """Add the estate's secret values to the registry `redact` removes everywhere (once).

        The values of secret-looking names (`*_KEY`, `*_TOKEN`, `PASSWORD`, `DSN`, …) in the
        components' `env` and in agentheal's own environment (which components inherit), and of
        secret-looking keys in the components' config and flags files (the first MB of each).
        """
        if self._secrets_registered:
            return
        from agentheal.redaction import register_config_secrets, register_env_secrets

        self._secrets_registered = True
        register_env_secrets()
        for comp in self.components.values():
            register_env_secrets(comp.env)
            for config in [*comp.configs, *([comp.flags] if comp.flags else [])]:
                try:
                    with self.path(config).open("rb") as f:
                        text = f.read(_SECRET_SCAN_BYTES).decode("utf-8", "replace")
                except OSError:
                    continue  # not written yet; read_config registers it when it reads it
                register_config_secrets(text)


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per problem, each naming its place in the file: `components.a.command: ...`."""
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        # pydantic prefixes our own ValueErrors with "Value error, "; the field name says enough.
        line = f"{where}: {e['msg'].removeprefix('Value error, ')}"
        value = e.get("input")
        if e["type"] != "missing" and not isinstance(value, dict | list) and value is not None:
            line += f" (got {value!r:.60})"
        lines.append(line)
    return lines


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping; `error` names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise error(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be a YAML mapping at the top level, got {type(data).__name__}")
    return data


def load_estate(path: str | Path) -> Estate:
    """Load and validate an estate file.

    Args:
        path: The estate YAML file; paths inside it are relative to its folder.

    Returns:
        The validated estate, with `root` set to the file's folder.

    Raises:
        EstateError: The file is missing, is not valid YAML, or breaks the schema; the message
            names the file and each offending field.
    """
    file = Path(path).expanduser().resolve()
    data = read_yaml_mapping(file, "estate file", EstateError)
    if "root" in data:
        raise EstateError(f"{file}: root: not allowed; paths are relative to the estate file's folder")
    try:
        estate = Estate.model_validate({**data, "root": file.parent})
    except ValidationError as e:
        raise EstateError(
            f"{file}: invalid estate file:\n  " + "\n  ".join(describe_validation_error(e))
        ) from None
    except EstateError as e:
        raise EstateError(f"{file}: {e}") from None
    estate.register_secrets()
    return estate


def estate_schema() -> dict[str, Any]:
    """The JSON Schema of an estate file."""
    schema = Estate.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentheal estate file"
    return schema


def export_schema(path: str | Path) -> None:
    """Write the estate file's JSON Schema to `path` (pretty-printed, stable key order)."""
    Path(path).write_text(json.dumps(estate_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
