"""`agentheal db …`: where the schema of the event store and the checkpoints stands, and upgrading it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentheal.cli._common import EXIT_NOT_HEALED, EXIT_OK, _fail, _print_json, _settings, app

db_app = typer.Typer(
    help="The database's schema (event store and checkpoints): where it stands, upgrading it.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]


def _storage(fn: Any) -> Any:
    from agentheal.storage import StorageError

    try:
        return fn()
    except StorageError as exc:
        _fail(str(exc))


def _rev(value: Any) -> str:
    return "none" if value is None else str(value)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Bring the event store and the checkpoints to this agentheal's schema (safe to run again, and
    by several workers at once). With AGENTHEAL_DATABASE_URL unset: the SQLite files of the home."""
    from agentheal.storage import database

    settings = _settings()
    done = _storage(lambda: database.upgrade(settings))
    if as_json:
        _print_json(done)
        return
    events, cps = done["events"], done["checkpoints"]
    typer.echo(f"{done['backend']} {done['database']}")
    typer.echo(f"events: revision {_rev(events['before'])} -> {events['after']}")
    if "file" in cps:
        typer.echo(f"checkpoints: {cps['file']}")
    else:
        typer.echo(f"checkpoints: migration {_rev(cps['before'])} -> {cps['after']}")


@db_app.command("current")
def db_current(as_json: JsonFlag = False) -> None:
    """Where the schema stands; exit 1 when `agentheal db upgrade` is needed before agentheal can use it."""
    from agentheal.storage import database

    settings = _settings()
    found = _storage(lambda: database.status(settings))
    if as_json:
        _print_json(found)
    else:
        events, cps = found["events"], found["checkpoints"]
        typer.echo(f"{found['backend']} {found['database']}")
        if events["revision"] == events["head"]:
            state = "current"
        elif events["current"]:
            state = "made or upgraded when first opened"
        else:
            state = "run `agentheal db upgrade`"
        typer.echo(f"events: revision {_rev(events['revision'])} of {events['head']} ({state})")
        if "file" in cps:
            typer.echo(f"checkpoints: {cps['file']} (made on first use)")
        else:
            state = "current" if cps["current"] else "run `agentheal db upgrade`"
            typer.echo(f"checkpoints: migration {_rev(cps['version'])} of {cps['needed']} ({state})")
    raise typer.Exit(EXIT_OK if found["current"] else EXIT_NOT_HEALED)
