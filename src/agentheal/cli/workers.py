"""`agentheal workers`: the workers sharing this PostgreSQL database, their leases and what each holds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from agentheal.cli._common import _fail, _print_json, _settings, app

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]
AllFlag = Annotated[bool, typer.Option("--all", help="Also the workers that stopped or went silent.")]


def _ago(at: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - at).total_seconds())
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _listing(everyone: bool) -> dict[str, Any]:
    import sqlalchemy as sa

    from agentheal.models import utcnow
    from agentheal.storage.urls import shown
    from agentheal.work import Registry, WorkQueue

    settings = _settings()
    if settings.database_url is None:
        return {
            "backend": "sqlite",
            "workers": [],
            "queue": None,
            "detail": "this home keeps its events in SQLite: one worker, no shared work "
            "(set AGENTHEAL_DATABASE_URL=postgresql://… to share work between workers)",
        }
    url = settings.database_url.get_secret_value()
    queue = WorkQueue(settings.events_url)
    try:
        rows = Registry(queue).workers(everyone=everyone)
        counts = queue.counts()
    except sa.exc.OperationalError as exc:
        _fail(f"cannot read the workers from the database at {shown(url)}: {exc.orig}")
    except sa.exc.ProgrammingError:
        _fail(f"the database at {shown(url)} has no work tables: run `agentheal db upgrade`")
    finally:
        queue.close()
    return {
        "backend": "postgresql",
        "database": shown(url),
        "at": utcnow().isoformat(),
        "workers": [r.as_json() for r in rows],
        "queue": counts,
    }


@app.command("workers")
def workers(as_json: JsonFlag = False, everyone: AllFlag = False) -> None:
    """The live workers sharing this database (name, host, pid, started, last heartbeat), the claims
    each holds with their leases, and how much work is queued."""
    found = _listing(everyone)
    if as_json:
        _print_json(found)
        return
    if found["backend"] == "sqlite":
        typer.echo(found["detail"])
        return
    now = datetime.fromisoformat(found["at"])
    queue = found["queue"]
    typer.echo(f"{found['database']}: {len(found['workers'])} worker(s); "
               f"{queue['queued']} queued, {queue['claimed']} claimed, {queue['done']} done")  # fmt: skip
    for w in found["workers"]:
        state = "live" if w["live"] else ("stopped" if w["stopped_at"] else "silent")
        started = datetime.fromisoformat(w["started_at"])
        beat = datetime.fromisoformat(w["heartbeat_at"])
        typer.echo(
            f"{w['name']}  {state}  {w['host']} pid {w['pid']}  started {started:%Y-%m-%d %H:%M:%S}  "
            f"heartbeat {_ago(beat, now)}  lease {w['lease_s']:g} s  holds {len(w['holds'])}/{w['max_heals']}"
        )
        for h in w["holds"]:
            until = datetime.fromisoformat(h["lease_until"]) if h["lease_until"] else None
            left = f"lease ends in {(until - now).total_seconds():.0f} s" if until else "no lease"
            resumed = " (resumed)" if h["resumed"] else ""
            typer.echo(f"    run {h['run_id'][:12]}  {h['component']}  {left}{resumed}")
