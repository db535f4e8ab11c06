"""The documents a door shows whole: a run's story as text, the persona files, the estate file;
and a run's result in brief, for an agent to read.

The MCP door publishes them as resources; any door that wants a file's text (not a summary of it)
calls these. Each lookup names what it could not find and what there is instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.events import EventStore


class DocumentNotFound(LookupError):
    """No such run, persona or estate file; the message says what there is instead."""


def story_text(events: EventStore, run: str) -> str:
    """A run's whole story as text (what `agentheal runs show` prints), redacted.

    Raises:
        DocumentNotFound: no run has that id or prefix.
        RunLookupError: the prefix is too short or names several runs.
    """
    from agentheal.story import render_story

    detail = events.run(run)
    if detail is None:
        raise DocumentNotFound(f"no run {run!r}; list_runs (or `agentheal runs`) shows them")
    return render_story(detail)


def persona_files(settings: Settings) -> dict[str, Path]:
    """Each persona's name and the file it loads from (built-in, generated, own folder; retired ones too)."""
    from agentheal.config import package_data
    from agentheal.personas import load_personas

    dirs = [package_data("personas"), settings.generated_personas_dir]
    if settings.personas_dir is not None:
        dirs.append(settings.personas_dir)
    return dict(sorted(load_personas([d for d in dirs if d.is_dir()]).paths.items()))


def persona_text(settings: Settings, name: str) -> str:
    """The persona file of `name`, as written (front matter and body).

    Raises:
        DocumentNotFound: no loading persona has that name.
    """
    files = persona_files(settings)
    path = files.get(name)
    if path is None:
        known = ", ".join(files) or "none"
        raise DocumentNotFound(f"no persona named {name!r} (loaded: {known})")
    return path.read_text(encoding="utf-8")


def estate_text(estate_path: Path | None) -> str:
    """The estate file this process heals, as written.

    Raises:
        DocumentNotFound: the process was started without an estate, or the file is gone.
    """
    if estate_path is None:
        raise DocumentNotFound("no estate: this server was started without --estate FILE")
    try:
        return estate_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentNotFound(f"estate file {estate_path}: {exc.strerror or exc}") from None


def run_summary(result: dict[str, Any]) -> dict[str, Any]:
    """A run's heal JSON without its bulky parts (story, evidence), for an agent to read: status,
    reason, persona, the plan's and the actions' one-liners, validation, the hypothesis."""
    plan = result.get("plan") or {}
    return {
        "run_id": result.get("run_id"),
        "status": result.get("status"),
        "reason": result.get("reason"),
        "component": result.get("component"),
        "persona": result.get("persona"),
        "plan_source": result.get("source"),
        "plan": [f"{s.get('action')} {s.get('component')}" for s in plan.get("steps", [])],
        "actions": [
            f"{a.get('action')} {a.get('component')}: {a.get('outcome')}" for a in result.get("actions", [])
        ],
        "validation": result.get("validation"),
        "diagnosis": (result.get("diagnosis") or {}).get("hypothesis"),
    }
