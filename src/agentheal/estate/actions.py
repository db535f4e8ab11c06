"""The action catalogue: every action agentheal may take on an estate, its risk and its arguments.

An LLM or a persona playbook only ever names an action from here with arguments; `validate_step`
checks the name, the component and the arguments (paths must stay inside the folders the estate
file declares for that component) before policy is even asked.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentheal.estate.model import Estate, describe_validation_error
from agentheal.models import Risk, Step


class ActionError(Exception):
    """A step that cannot run: unknown action or component, bad arguments, a path out of bounds."""


class NoArgs(BaseModel):
    """No arguments."""

    model_config = ConfigDict(extra="forbid")


class TailLogsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: int = Field(default=50, ge=1, le=500, description="Lines from the end of each log.")
    path: str | None = Field(default=None, description="One of the component's log files; default all.")
    offset: int | None = Field(
        default=None, ge=0, description="Read forward from this byte offset (0: the head), not from the end."
    )
    max_bytes: int | None = Field(
        default=None, ge=1, le=65536, description="At most this many bytes (a line may be cut in two)."
    )


class ConfigArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="One of the component's config files; default all.")


class ReadConfigArgs(ConfigArgs):
    """read_config's window; restore_config puts back whole files and takes none."""

    offset: int = Field(default=0, ge=0, description="Read from this byte offset.")
    max_bytes: int = Field(default=8192, ge=1, le=65536, description="At most this many bytes of each file.")


class RotateLogsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="One of the component's log files; default all.")
    keep: int = Field(default=3, ge=1, le=20, description="Rotated generations kept (log.1 ... log.N).")


class CleanDirArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A folder inside one of the component's data folders or log folders.")
    older_than_s: float = Field(default=0, ge=0, description="Only files older than this; 0 = all files.")


class RollbackReleaseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$",
        description="A release folder name; default the last known good release, else the one before.",
    )


class SetFlagArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No pattern: a playbook names the flag as "{flag_changed.path}"; validate_step checks the file has it.
    name: str = Field(min_length=1, max_length=100, description="A flag in the component's flags file.")
    value: bool | int | float | str | None = Field(
        default=None, description="The new value, of the flag's type. Give this or last_good."
    )
    last_good: bool = Field(
        default=False, description="Set it back to its value in the last known good flags."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SetFlagArgs:
        if self.last_good == (self.value is not None):
            raise ValueError("give either value or last_good: true")
        return self


class ScaleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(
        ge=1, le=64, description="Worker processes to run, within the estate's min and max."
    )


class LockArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="One of the component's lock files; default all.")


class ActionSpec(BaseModel):
    """One action of the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    risk: Risk
    reversible: bool
    read_only: bool
    description: str
    args_model: type[BaseModel]
    # What carrying it out changes on the component, and the diagnosis facts whose cause that change
    # removes: the agent factory gives a specialist only the actions that answer its gap's evidence.
    effect: str = "nothing: it only reads"
    answers: tuple[str, ...] = ()
    # Its change is read by the process only when it starts again (the plan follows it with restart).
    needs_restart: bool = False

    def describe(self) -> dict[str, Any]:
        """The action for a prompt: name, risk, reversibility, description and its arguments' schema."""
        return {
            "name": self.name,
            "risk": self.risk.value,
            "reversible": self.reversible,
            "read_only": self.read_only,
            "description": self.description,
            "args": _args_schema(self.args_model),
        }


def _spec(
    name: str,
    risk: Risk,
    reversible: bool,
    description: str,
    args: type[BaseModel] = NoArgs,
    *,
    effect: str = "nothing: it only reads",
    answers: tuple[str, ...] = (),
    needs_restart: bool = False,
) -> ActionSpec:
    return ActionSpec(
        name=name,
        risk=risk,
        reversible=reversible,
        read_only=risk is Risk.none,
        description=description,
        args_model=args,
        effect=effect,
        answers=answers,
        needs_restart=needs_restart,
    )


CATALOGUE: dict[str, ActionSpec] = {
    s.name: s
    for s in (
        _spec(
            "start",
            Risk.low,
            True,
            "Start the component's process if it is not running, then wait for its probes.",
            effect="process state: a stopped process runs again",
            answers=("process_down",),
        ),
        _spec(
            "restart",
            Risk.low,
            True,
            "Stop the component's process group and start it again, then wait for its probes.",
            effect="process state: a fresh process, its memory, workers, pools and caches reset",
            answers=(
                "process_down",
                "slow_response",
                "memory_high",
                "log_errors",
                "probe_failed",
                "dependency_down",
            ),
        ),
        _spec(
            "stop",
            Risk.high,
            True,
            "Stop the component's process group (SIGTERM, then SIGKILL after 5 s).",
            effect="process state: the process stops serving",
        ),
        _spec(
            "restore_config",
            Risk.medium,
            True,
            "Put back the last known good copy of a config file (the replaced file is kept as .bad). "
            "Does not restart: follow with restart.",
            ConfigArgs,
            effect="config content: a config file back to its last known good copy",
            answers=("config_changed", "config_missing"),
            needs_restart=True,
        ),
        _spec(
            "rotate_logs",
            Risk.low,
            False,
            "Move a log file to .1 (older generations shift up) and empty it; the process keeps writing.",
            RotateLogsArgs,
            effect="disk usage: the size of a log file",
            answers=("logs_large",),
        ),
        _spec(
            "clean_dir",
            Risk.medium,
            False,
            "Delete files in a folder inside the component's data or log folders "
            "(current logs and configs are kept).",
            CleanDirArgs,
            effect="disk usage: the files in a declared data or log folder",
            answers=("disk_over_budget",),
        ),
        _spec(
            "rollback_release",
            Risk.medium,
            True,
            "Point the component's `current` release link back at an earlier release (default: the last "
            "known good one); the switch is recorded. Does not restart: follow with restart.",
            RollbackReleaseArgs,
            effect="running release: the `current` release link",
            answers=("bad_release",),
            needs_restart=True,
        ),
        _spec(
            "set_flag",
            Risk.medium,
            True,
            "Set one feature flag in the component's flags file (it must exist, and keep its type), or put "
            "it back to its last known good value; the previous value is recorded. Takes effect without a "
            "restart for components that re-read their flags.",
            SetFlagArgs,
            effect="feature flag: one value in the flags file",
            answers=("flag_changed",),
        ),
        _spec(
            "scale",
            Risk.medium,
            True,
            "Run a number of worker processes (within the min and max the estate declares): the count is "
            "kept and the component restarted with it (AGENTHEAL_REPLICAS).",
            ScaleArgs,
            effect="replicas: the number of worker processes",
            answers=("queue_stalled", "slow_response"),
        ),
        _spec(
            "remove_stale_lock",
            Risk.low,
            False,
            "Remove a lock file that stops the component from starting, only when the pid it names is not "
            "running or belongs to a process younger than the lock. A held lock is never touched.",
            LockArgs,
            effect="lock file: one left by a dead process",
            answers=("stale_lock",),
        ),
        _spec("probe", Risk.none, True, "Run the component's probes now: status, latency, errors."),
        _spec("tail_logs", Risk.none, True, "The last lines of the component's log files.", TailLogsArgs),
        _spec(
            "process_stats",
            Risk.none,
            True,
            "The component's process: pid, status, memory, CPU, open files, threads, uptime.",
        ),
        _spec(
            "read_config",
            Risk.none,
            True,
            "The content of the component's config files (8 KB each at most).",
            ReadConfigArgs,
        ),
        _spec("dependencies", Risk.none, True, "The components this one depends on, each with its health."),
        _spec(
            "releases",
            Risk.none,
            True,
            "The component's releases: which one is current, since when, the last known good one, and the "
            "release changes agentheal made.",
        ),
        _spec(
            "read_flags",
            Risk.none,
            True,
            "The component's feature flags, with those that differ from the last known good copy.",
        ),
    )
}

REMEDIATIONS = [n for n, s in CATALOGUE.items() if not s.read_only]


def answering(facts: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """The remediations whose effect answers one of these diagnosis facts, in catalogue order."""
    return [n for n in REMEDIATIONS if set(CATALOGUE[n].answers) & set(facts)]


OBSERVATIONS = [n for n, s in CATALOGUE.items() if s.read_only]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _declared(estate: Estate, declared: list[str], wanted: str, what: str) -> str | None:
    """A problem when `wanted` is not one of the declared files (compared as resolved paths)."""
    target = estate.path(wanted)
    if any(estate.path(d) == target for d in declared):
        return None
    listed = ", ".join(declared) or "none"
    return f"args.path: {wanted!r} is not one of the component's {what} files (declared: {listed})"


def clean_dir_problem(estate: Estate, component: str, wanted: str) -> str | None:
    """Why `clean_dir` may not act on `wanted`, or None when it lies inside a declared folder.

    The path is resolved with symlinks followed, so a link pointing out of the folders is refused.
    """
    comp = estate.component(component)
    target = estate.path(wanted)
    data = [estate.path(d.path) for d in comp.data_dirs]
    log_folders = [estate.path(log).parent for log in comp.logs]
    if _inside(estate.root, target):
        return f"args.path: {wanted!r} is the estate's own folder or contains it; refusing to clean it"
    if any(_inside(target, d) for d in data):
        return None
    workdirs = [estate.path(c.workdir) for c in estate.components.values()]
    if any(_inside(target, f) for f in log_folders):
        if any(_inside(w, target) for w in workdirs):
            return f"args.path: {wanted!r} holds a component's workdir; refusing to clean it"
        return None
    allowed = [d.path for d in comp.data_dirs] + sorted({str(Path(log).parent) for log in comp.logs})
    return (
        f"args.path: {wanted!r} resolves to {target}, outside the data and log folders of {component} "
        f"(allowed: {', '.join(allowed) or 'none declared'})"
    )


def validate_step(step: Step, estate: Estate) -> list[str]:
    """Check a step against the catalogue and the estate.

    Args:
        step: The step (action, component, args).
        estate: The estate it would act on.

    Returns:
        The problems, each naming what is wrong; an empty list when the step may run.
    """
    spec = CATALOGUE.get(step.action)
    problems = []
    if spec is None:
        problems.append(f"unknown action {step.action!r} (known: {', '.join(CATALOGUE)})")
    if step.component not in estate.components:
        problems.append(
            f"unknown component {step.component!r} (known: {', '.join(sorted(estate.components))})"
        )
    if problems or spec is None:
        return problems
    try:
        args = spec.args_model.model_validate(step.args)
    except ValidationError as e:
        return [f"{step.action}: args.{line}" for line in describe_validation_error(e)]
    comp = estate.component(step.component)
    problem = _declares(estate, step.action, step.component, args)
    if problem:
        return [f"{step.action} on {step.component}: {problem}"]
    path = getattr(args, "path", None)
    if path is None:
        return []
    if step.action in ("restore_config", "read_config"):
        problem = _declared(estate, comp.configs, path, "config")
    elif step.action in ("rotate_logs", "tail_logs"):
        problem = _declared(estate, comp.logs, path, "log")
    elif step.action == "clean_dir":
        problem = clean_dir_problem(estate, step.component, path)
    elif step.action == "remove_stale_lock":
        problem = _declared(estate, comp.locks, path, "lock")
    return [f"{step.action} on {step.component}: {problem}"] if problem else []


def _declares(estate: Estate, action: str, component: str, args: BaseModel) -> str | None:
    """What the estate file must declare for the newer actions, and their arguments within it."""
    comp = estate.component(component)
    if action in ("rollback_release", "releases") and comp.releases is None:
        return "the component declares no releases (releases: {dir, current}) in the estate file"
    if action in ("set_flag", "read_flags") and comp.flags is None:
        return "the component declares no flags file (flags: PATH) in the estate file"
    if action == "remove_stale_lock" and not comp.locks:
        return "the component declares no lock files (locks: [PATH]) in the estate file"
    if action == "scale":
        if comp.scale is None:
            return "the component declares no scale (scale: {min, max}) in the estate file"
        wanted = getattr(args, "replicas", 0)
        if not comp.scale.min <= wanted <= comp.scale.max:
            return f"args.replicas: {wanted} is outside min {comp.scale.min} .. max {comp.scale.max}"
    if action == "set_flag":
        return _flag_problem(estate, component, getattr(args, "name", ""))
    return None


def _flag_problem(estate: Estate, component: str, name: str) -> str | None:
    from agentheal.estate.changes import read_flags

    flags_file = estate.component(component).flags
    assert flags_file is not None
    try:
        flags = read_flags(estate.path(flags_file))
    except ValueError as e:
        return str(e)
    if name not in flags:
        return (
            f"args.name: {name!r} is not a flag in {flags_file} (flags: {', '.join(sorted(flags)) or 'none'})"
        )
    return None


@functools.cache
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema, computed once: the catalogue's argument models never change."""
    return model.model_json_schema()


def args_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """An action's argument model as JSON Schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_model_schema(model))


def _args_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _model_schema(model)
    properties = {
        k: {kk: copy.deepcopy(vv) for kk, vv in v.items() if kk != "title"}
        for k, v in schema.get("properties", {}).items()
    }
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if schema.get("required"):
        result["required"] = list(schema["required"])
    return result


def tool_schemas(estate: Estate) -> list[dict[str, Any]]:
    """OpenAI "tools" JSON for the read-only observations, `component` limited to the estate's names.

    Built once per set of component names (every LLM diagnosis asks for it) and shared: read it,
    send it, do not change it.
    """
    return _tool_schemas(tuple(sorted(estate.components)))


@functools.lru_cache(maxsize=32)
def _tool_schemas(components: tuple[str, ...]) -> list[dict[str, Any]]:
    tools = []
    for name in OBSERVATIONS:
        spec = CATALOGUE[name]
        params = _args_schema(spec.args_model)
        params["properties"] = {
            "component": {
                "type": "string",
                "enum": list(components),
                "description": "Component to observe.",
            },
            **params["properties"],
        }
        params["required"] = ["component", *params.get("required", [])]
        tools.append(
            {
                "type": "function",
                "function": {"name": name, "description": spec.description, "parameters": params},
            }
        )
    return tools


def describe_actions(names: list[str] | None = None) -> list[dict[str, Any]]:
    """The catalogue (or the named actions) as dicts for prompts; unknown names are left out."""
    return [
        CATALOGUE[n].describe() for n in (names if names is not None else list(CATALOGUE)) if n in CATALOGUE
    ]
