"""The commands of the HTTP door: `agentheal serve`, `agentheal tokens …`, `agentheal audit`."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import _err, _fail, _load_estate, _print_json, _settings, app

tokens_app = typer.Typer(
    help="API tokens for `agentheal serve`: made, listed, revoked.", no_args_is_help=True
)
app.add_typer(tokens_app, name="tokens")

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]
_AGO = re.compile(r"^(\d+)\s*([smhd])$")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    estate: Annotated[
        Path | None, typer.Option(help="The estate file the server heals.", envvar="AGENTHEAL_ESTATE")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    insecure_local: Annotated[
        bool,
        typer.Option("--insecure-local", help="No tokens: every request is the local admin; loopback only."),
    ] = False,
    allow_faults: Annotated[
        bool, typer.Option("--allow-faults", help="Let admins break the estate with POST /faults.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Also run the detection loop (`agentheal watch`) here.")
    ] = False,
    watch_config: Annotated[
        Path | None, typer.Option(help="The detection loop's settings file (as `watch --config`).")
    ] = None,
    watch_interval: Annotated[
        float | None, typer.Option(help="Seconds between the detection loop's probe rounds.")
    ] = None,
    max_heals: Annotated[int, typer.Option(min=1, max=64, help="Heals at once (one per component).")] = 4,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); its schema is at /openapi.json, its docs at /docs."""
    from agentheal.api.tokens import TokenError, TokenStore

    levels = ("critical", "error", "warning", "info", "debug", "trace")
    if log_level not in levels:
        _fail(f"--log-level {log_level!r}: one of {', '.join(levels)}")
    settings = _settings()
    if estate is not None:
        _load_estate(estate)  # a broken estate file is a usage error before the server starts
    if policy is not None or settings.policy_file is not None:
        from agentheal.policy import PolicyError, load_policy

        try:
            load_policy(policy or settings.policy_file, settings)
        except PolicyError as exc:
            _fail(str(exc))
    if watch and estate is None:
        _fail("--watch needs --estate FILE: the detection loop watches an estate")
    detect_config = _detect_config(watch_config, watch_interval) if watch else None
    tokens = TokenStore(settings.home_dir)
    try:
        configured = tokens.configured()
    except TokenError as exc:
        _fail(str(exc))
    if insecure_local:
        if not _loopback(host):
            _fail(f"--insecure-local serves on loopback only, not on {host!r}: use --host 127.0.0.1")
        _err(
            "warning: --insecure-local: no token is checked and every request acts as the local admin "
            f"'local'; listening on {host} (loopback) only"
        )
    elif not configured:
        _fail(
            "no API tokens: make one with `agentheal tokens add NAME --role admin`, or start with "
            "--insecure-local (loopback only, no tokens checked)"
        )
    from agentheal.api.app import create_app

    api = create_app(
        settings,
        estate_path=estate,
        policy_path=policy,
        insecure_local=insecure_local,
        allow_faults=allow_faults,
        watch=watch,
        watch_config=detect_config,
        max_heals=max_heals,
    )
    _run_until_stopped(api, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


def _stopped(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def _run_until_stopped(api: Any, **options: Any) -> None:
    """uvicorn.run, where a SIGTERM ends the server with exit code 0, as it does `agentheal watch`.

    Once uvicorn has shut down gracefully (requests answered, the lifespan's end run: the watch
    stopped, its heals finished) it raises the signal that stopped it again, so that the handler it
    found runs; with Python's default one a SIGTERM then killed the process (exit -15) after a clean
    stop. Ours ends it with 0; a SIGTERM before uvicorn listens for signals ends it the same way.
    """
    import signal
    import threading

    import uvicorn

    if threading.current_thread() is not threading.main_thread():  # no signals there, nor in uvicorn
        uvicorn.run(api, **options)
        return
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(api, **options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _detect_config(path: Path | None, interval: float | None) -> Any:
    from agentheal.detect.config import DetectConfigError, load_detect_config

    try:
        config = load_detect_config(path)
    except DetectConfigError as exc:
        _fail(str(exc))
    if interval is not None:
        if interval <= 0:
            _fail(f"--watch-interval {interval}: give a number of seconds above 0")
        config = config.model_copy(update={"interval_s": interval})
    return config


# ---------------------------------------------------------------- tokens


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Argument(help="Who the token is for (a person, a tool, a bot).")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")],
) -> None:
    """Make a token; it is printed once, on the last line, and only its salted hash is kept."""
    from agentheal.api.tokens import TokenError, TokenStore
    from agentheal.events import EventStore
    from agentheal.services import audit

    settings = _settings()
    try:
        token = TokenStore(settings.home_dir).add(name, role)
    except TokenError as exc:
        _fail(str(exc))
    audit.record(EventStore(settings.events_url), audit.local_actor(), "token_add", door="cli",
                 target=name, detail=f"role {role}")  # fmt: skip
    typer.echo(f"token for {name} (role {role}); shown this once, send it as `Authorization: Bearer …`:")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(as_json: JsonFlag = False) -> None:
    """The tokens' names, roles and creation times (never the tokens)."""
    from agentheal.api.tokens import TokenError, TokenStore

    try:
        listed = TokenStore(_settings().home_dir).list()
    except TokenError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(listed)
        return
    if not listed:
        typer.echo("no tokens: `agentheal tokens add NAME --role viewer|operator|admin`")
    for t in listed:
        typer.echo(f"{t['name']:<24} {t['role']:<9} {t['created_at']}")


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: a running server refuses it from its next request."""
    from agentheal.api.tokens import TokenError, TokenStore
    from agentheal.events import EventStore
    from agentheal.services import audit

    settings = _settings()
    try:
        TokenStore(settings.home_dir).revoke(name)
    except TokenError as exc:
        _fail(str(exc))
    audit.record(
        EventStore(settings.events_url), audit.local_actor(), "token_revoke", door="cli", target=name
    )
    typer.echo(f"revoked {name}")


# ---------------------------------------------------------------- audit


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    from agentheal.models import utcnow

    ago = _AGO.match(text.strip())
    if ago:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[ago.group(2)]
        return utcnow() - timedelta(**{unit: int(ago.group(1))})
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--since {text!r}: give a time (2026-05-01T12:00) or an age (30m, 2h, 7d)")


@app.command("audit")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
    since: Annotated[str | None, typer.Option(help="Since a time or an age (30m, 2h, 7d).")] = None,
    actor: Annotated[str | None, typer.Option(help="Only changes by this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (gap, approve, reject, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Who changed what through which door: gaps, approvals, rejections, imports, agents, tokens,
    and the changes refused."""
    from agentheal.events import EventStore
    from agentheal.services import audit

    rows = audit.trail(
        EventStore(_settings().events_url), limit, since=_since(since), actor=actor, action=action
    )
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        typer.echo("no changes recorded yet")
    for r in rows:
        mark = "" if r.outcome == "ok" else f" [{r.outcome.upper()}]"
        role = f" ({r.role})" if r.role else ""
        typer.echo(
            f"{r.at:%Y-%m-%d %H:%M:%S}  {r.door:<4} {r.actor}{role}  {r.action}{mark}  "
            f"{r.target or '-'}  {r.detail}".rstrip()
        )
