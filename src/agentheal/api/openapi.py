"""The API's OpenAPI schema as a file: `python -m agentheal.api.openapi [--check] [PATH]`.

The schema is the API's documentation; `openapi.json` at the repository's root is a copy of what
the app serves at `/openapi.json`, kept current by running this module (a test fails when the copy
and the app differ). `--check` writes nothing and exits 1, naming the paths that differ, when the
file is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("openapi.json")


def schema() -> dict[str, Any]:
    """The schema the app serves, built with a throwaway home folder (it depends on no setting)."""
    from agentheal.api.app import create_app
    from agentheal.config import Settings

    with tempfile.TemporaryDirectory(prefix="agentheal-openapi-") as home:
        app = create_app(Settings(home=Path(home)))
        return dict(app.openapi())


def render(data: dict[str, Any]) -> str:
    """The schema as the committed file holds it: sorted keys, two-space indents, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two schemas, in words: operations added, removed or changed."""
    out = []
    old_paths, new_paths = old.get("paths", {}), new.get("paths", {})
    for path in sorted(set(old_paths) | set(new_paths)):
        before, after = old_paths.get(path, {}), new_paths.get(path, {})
        for method in sorted(set(before) | set(after)):
            if method not in before:
                out.append(f"added {method.upper()} {path}")
            elif method not in after:
                out.append(f"removed {method.upper()} {path}")
            elif before[method] != after[method]:
                out.append(f"changed {method.upper()} {path}")
    for name in sorted(
        set(old.get("components", {}).get("schemas", {})) ^ set(new.get("components", {}).get("schemas", {}))
    ):
        out.append(f"schema {name} added or removed")
    if not out and old != new:
        out.append("component schemas or top-level fields changed")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentheal.api.openapi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="default: openapi.json")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the file differs from the app.")
    args = parser.parse_args(argv)
    current = schema()
    if args.check:
        try:
            committed = json.loads(args.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            sys.stderr.write(f"error: {args.path}: {exc}\n")
            return 1
        changed = differences(committed, current)
        if changed:
            sys.stderr.write(
                f"{args.path} is out of date ({'; '.join(changed)}): run `python -m agentheal.api.openapi`\n"
            )
            return 1
        return 0
    args.path.write_text(render(current), encoding="utf-8")
    sys.stdout.write(f"wrote {args.path} ({len(current.get('paths', {}))} paths)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
