"""Generated persona files on disk: the current version, the versions before it, rejected drafts.

Layout under `settings.generated_personas_dir` (the home folder's `personas/`):

    <name>.md                 the newest version; the only one the registry loads
    versions/<name>.v<N>.md   every earlier version, kept as it was
    rejected/<name>.<time>.md designs that failed their checks, for a person to read
    retired.yaml              retirements of any persona, built-in or generated (see personas.py)

The registry reads only `*.md` directly in the folder, so versions and drafts never load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.persona_model import Persona

VERSIONS = "versions"
REJECTED = "rejected"
_VERSION = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)\.v(?P<n>\d+)\.md$")


def current_path(settings: Settings, name: str) -> Path:
    """Where the newest version of a generated persona lives."""
    return settings.generated_personas_dir / f"{name}.md"


def _write(path: Path, text: str) -> None:
    # Write beside, then rename: a reader never sees half a persona file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_version(settings: Settings, persona: Persona) -> Path:
    """Write a generated persona as its newest version; the one it replaces moves to `versions/`.

    Raises:
        PersonaLoadError: The text does not load back as this persona.
        ValueError: The persona is not generated.
    """
    from agentheal.personas import load_persona, parse_persona

    if persona.origin != "generated":
        raise ValueError(f"{persona.name}: only generated personas are written by the factory")
    path = current_path(settings, persona.name)
    text = persona.to_markdown()
    parse_persona(text, path)
    if path.is_file():
        old = load_persona(path)
        keep = settings.generated_personas_dir / VERSIONS / f"{old.name}.v{old.version}.md"
        _write(keep, path.read_text(encoding="utf-8"))
    _write(path, text)
    return path


def save_rejected(settings: Settings, name: str, text: str, stamp: str) -> Path:
    """Keep a design that failed its checks, for the person the gap is escalated to."""
    path = settings.generated_personas_dir / REJECTED / f"{name}.{stamp}.md"
    _write(path, text)
    return path


def versions(settings: Settings, name: str) -> list[tuple[int, Path]]:
    """Every stored version of a generated persona, oldest first (the current one last)."""
    from agentheal.personas import PersonaLoadError, load_persona

    found: dict[int, Path] = {}
    folder = settings.generated_personas_dir / VERSIONS
    if folder.is_dir():
        for path in folder.glob(f"{name}.v*.md"):
            match = _VERSION.match(path.name)
            if match and match["name"] == name:
                found[int(match["n"])] = path
    current = current_path(settings, name)
    if current.is_file():
        try:
            found[load_persona(current).version] = current
        except PersonaLoadError:
            found[max(found, default=0) + 1] = current
    return sorted(found.items())


def next_version(settings: Settings, name: str) -> int:
    """The version number a new version of `name` gets."""
    return max((n for n, _ in versions(settings, name)), default=0) + 1
