"""Sample estates shipped in `eval/estates/`, copied to a working folder with ports that are free.

A sample estate's file names fixed default ports (so a user can run it by hand); each component
that listens says so with `port:`. `materialize` copies the estate's folder without its runtime
state (logs, data, queue) and replaces every default port in the estate file with a free one,
so tests, the demo and the eval never collide with each other or with a hand-run copy.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

import yaml

from agentheal.estate.model import Estate, EstateError, load_estate

# What a running sample estate writes into its own folder (see eval/estates/*/.gitignore).
_RUNTIME = ("logs", "data", "queue", "__pycache__", "*.pyc", "*.bad", ".*.tmp")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LINKS = "release-links.txt"


def estates_root() -> Path:
    """The folder holding the sample estates (in the installed package, or `eval/estates` in a checkout)."""
    from agentheal.config import package_data

    return package_data("eval/estates")


def sample_estates() -> list[str]:
    """Names of the sample estates: folders of `estates_root()` with an `estate.yaml`."""
    root = estates_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "estate.yaml").is_file())


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)  # kept open until all are chosen, so no port is picked twice
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def materialize(
    name: str,
    dest: str | Path,
    ports: Mapping[str, int] | None = None,
    estate_name: str | None = None,
) -> Path:
    """Copy a sample estate to `dest` with its components on free (or given) ports.

    Args:
        name: A sample estate (see `sample_estates()`), e.g. "shopfront".
        dest: The folder to create; it must not exist or be empty.
        ports: Component -> port for the components whose port is given; the others get a free port.
        estate_name: A new name for the copy, so two copies in one agentheal home keep apart
            state folders (the name picks the state folder).

    Returns:
        The copy's estate file, validated.

    Raises:
        EstateError: Unknown sample estate, a `dest` that holds files, a port for a component
            that has none, two components on one port, or a bad estate name.
    """
    source = estates_root() / name
    if not (source / "estate.yaml").is_file():
        known = ", ".join(sample_estates()) or "none"
        raise EstateError(f"no sample estate {name!r} in {estates_root()} (known: {known})")
    target = Path(dest).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise EstateError(f"{target}: the destination must not exist or be an empty folder")
    if estate_name is not None and not _NAME.match(estate_name):
        raise EstateError(f"estate name {estate_name!r}: use letters, digits, '_', '.', '-' (up to 63)")
    defaults = _default_ports(source / "estate.yaml")
    wanted = dict(ports or {})
    unknown = sorted(set(wanted) - set(defaults))
    if unknown:
        raise EstateError(
            f"ports given for {', '.join(unknown)}, which declare no port "
            f"(components with a port: {', '.join(sorted(defaults)) or 'none'})"
        )
    fresh = iter(free_ports(len(defaults) - len(wanted)))
    chosen = {c: wanted[c] if c in wanted else next(fresh) for c in defaults}
    if len(set(chosen.values())) != len(chosen):
        raise EstateError(f"two components on one port: {chosen}")
    shutil.copytree(
        source, target, symlinks=True, ignore=shutil.ignore_patterns(*_RUNTIME), dirs_exist_ok=True
    )
    _relink(target)
    estate_file = target / "estate.yaml"
    text = estate_file.read_text(encoding="utf-8")
    by_old = {defaults[c]: chosen[c] for c in defaults}
    if by_old:
        # Whole numbers only: port 8080 must not rewrite 18080.
        pattern = re.compile(r"(?<!\d)(" + "|".join(str(p) for p in by_old) + r")(?!\d)")
        text = pattern.sub(lambda m: str(by_old[int(m.group(1))]), text)
    if estate_name is not None:
        text, n = re.subn(r"(?m)^name:.*$", f"name: {estate_name}", text, count=1)
        if n != 1:
            raise EstateError(f"{estate_file}: no top-level 'name:' line to rename")
    estate_file.write_text(text, encoding="utf-8")
    return _validated(estate_file)


def _relink(root: Path) -> None:
    """Restore the release links named in `release-links.txt` (`api/current -> releases/v1`).

    A wheel holds no symbolic links: installed, `current` is a plain copy of the release it pointed
    to, and that release's own folder is left out. The copy gets its folder and its link back, so
    `rollback_release` can switch the link as it does in a checkout.
    """
    manifest = root / _LINKS
    if not manifest.is_file():
        return
    for number, raw in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        link, arrow, target = (part.strip() for part in line.partition("->"))
        if not arrow or not link or not target:
            raise EstateError(f"{manifest} line {number}: expected 'LINK -> TARGET', got {raw!r}")
        path = root / link
        release = path.parent / target
        if path.is_symlink():
            continue
        if path.is_dir():
            if release.is_dir():
                shutil.rmtree(path)
            else:
                release.parent.mkdir(parents=True, exist_ok=True)
                path.rename(release)
        path.symlink_to(target)


def _default_ports(estate_file: Path) -> dict[str, int]:
    data = yaml.safe_load(estate_file.read_text(encoding="utf-8")) or {}
    components = data.get("components") or {}
    return {
        name: int(spec["port"])
        for name, spec in components.items()
        if isinstance(spec, dict) and spec.get("port")
    }


def _validated(estate_file: Path) -> Path:
    estate: Estate = load_estate(estate_file)
    missing = [
        f"{c}: {comp.releases.current}"
        for c, comp in estate.components.items()
        if comp.releases is not None and not estate.path(comp.releases.current).is_dir()
    ]
    if missing:
        raise EstateError(
            f"{estate_file}: release links that lead nowhere after the copy: {', '.join(missing)}"
        )
    return estate_file
