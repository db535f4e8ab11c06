"""Versioned changes under the home folder for the evolve graph: applied with the previous version
kept, and reverted to it byte for byte.

Each evolution keeps `home/evolution/ID/change.json` (the file it changed, the previous content's
SHA-256 or that there was none, the new content's) and `before.bin` (the previous bytes). A revert
writes those bytes back (or removes a file the change created) and checks the digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class ChangeError(Exception):
    """A versioned change cannot be applied or reverted as recorded."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder(home: Path, evolution_id: str) -> Path:
    return home / "evolution" / evolution_id


def apply_change(home: Path, evolution_id: str, target: Path, content: bytes) -> dict[str, Any]:
    """Write `content` to `target` (a file under `home`), keeping what it replaces."""
    target = target.resolve()
    if not target.is_relative_to(home.resolve()):
        raise ChangeError(f"{target} is outside the home folder {home}: evolutions change nothing else")
    keep = folder(home, evolution_id)
    keep.mkdir(parents=True, exist_ok=False)
    before = target.read_bytes() if target.is_file() else None
    if before is not None:
        (keep / "before.bin").write_bytes(before)
    record = {
        "target": str(target),
        "before_sha256": _digest(before) if before is not None else None,
        "after_sha256": _digest(content),
    }
    (keep / "change.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".evolving")
    tmp.write_bytes(content)
    tmp.replace(target)
    return record


def revert_change(home: Path, evolution_id: str) -> dict[str, Any]:
    """Put the previous version back byte for byte (or remove the file the change created)."""
    keep = folder(home, evolution_id)
    try:
        record: dict[str, Any] = json.loads((keep / "change.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChangeError(f"evolution {evolution_id}: its recorded change is unreadable: {exc}") from exc
    target = Path(record["target"])
    if record["before_sha256"] is None:
        target.unlink(missing_ok=True)
        return record | {"reverted": "removed the file the change created"}
    before = (keep / "before.bin").read_bytes()
    if _digest(before) != record["before_sha256"]:
        raise ChangeError(f"evolution {evolution_id}: the kept previous version does not match its digest")
    tmp = target.with_name(target.name + ".reverting")
    tmp.write_bytes(before)
    tmp.replace(target)
    if _digest(target.read_bytes()) != record["before_sha256"]:
        raise ChangeError(
            f"evolution {evolution_id}: {target} differs from its previous version after revert"
        )
    return record | {"reverted": "previous version restored byte for byte"}


def yaml_list_with(path: Path, key: str, entry: dict[str, Any]) -> bytes:
    """The YAML file at `path` (a mapping) with `entry` appended to its list `key`."""
    import yaml

    data: dict[str, Any] = {}
    if path.is_file():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        data = loaded if isinstance(loaded, dict) else {}
    data.setdefault(key, []).append(entry)
    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")


def persona_with_lesson(source: Path, lesson: str) -> bytes:
    """A persona file's next version: `version` raised by one, the lesson added under "## Lessons"."""
    import yaml

    text = source.read_text(encoding="utf-8")
    parts = text.split("---\n", 2)
    if len(parts) < 3 or parts[0].strip():
        raise ChangeError(f"{source}: not a persona file (YAML front matter between --- lines)")
    front = yaml.safe_load(parts[1]) or {}
    front["version"] = int(front.get("version", 1)) + 1
    body = parts[2].rstrip("\n")
    if "\n## Lessons\n" not in f"\n{body}\n":
        body += "\n\n## Lessons\n"
    body += f"\n- {lesson}\n"
    return ("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body).encode("utf-8")


def previous_bytes(home: Path, evolution_id: str) -> bytes | None:
    """The version an evolution replaced (None: the change created the file)."""
    keep = folder(home, evolution_id)
    try:
        record: dict[str, Any] = json.loads((keep / "change.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChangeError(f"evolution {evolution_id}: its recorded change is unreadable: {exc}") from exc
    return None if record["before_sha256"] is None else (keep / "before.bin").read_bytes()
