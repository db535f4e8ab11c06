"""`agentheal detect` and `agentheal watch`: find gaps now, or detect and heal continuously.

Exit codes: 0 when detection ran (whether or not it found gaps) or after a clean stop of watch,
2 for bad input (a missing estate file, a broken config, a bad flag). Inputs that turn out
unreadable while detecting (a log file, an alert file, a metrics endpoint) are reported on
standard error and skipped; detection goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import EXIT_OK, _err, _fail, _load_estate, _print_json, _settings, app

JsonFlag = Annotated[bool, typer.Option("--json", help="The gaps as a JSON list on standard output.")]
EstateOpt = Annotated[
    Path | None, typer.Option("--estate", help="The estate file.", envvar="AGENTHEAL_ESTATE")
]
LogOpt = Annotated[
    list[Path] | None, typer.Option("--log", help="A log file to mine (repeatable); no estate needed.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Detection config YAML: thresholds, metrics endpoints.")
]


def _config(path: Path | None, interval: float | None = None, max_heals: int | None = None) -> Any:
    from agentheal.detect.config import DetectConfigError, load_detect_config

    try:
        config = load_detect_config(path)
    except DetectConfigError as exc:
        _fail(str(exc))
    updates: dict[str, Any] = {}
    if interval is not None:
        if interval <= 0:
            _fail(f"--interval must be above 0 (got {interval:g})")
        updates["interval_s"] = interval
    if max_heals is not None:
        if not 1 <= max_heals <= 32:
            _fail(f"--max-heals must be 1..32 (got {max_heals})")
        updates["max_heals"] = max_heals
    return config.model_copy(update=updates)


def _warn(lines: list[str]) -> None:
    for line in lines:
        _err(f"warning: {line}")


@app.command()
def detect(
    estate: EstateOpt = None,
    log: LogOpt = None,
    alerts: Annotated[
        list[Path] | None, typer.Option("--alerts", help="An Alertmanager webhook JSON file (repeatable).")
    ] = None,
    feedback: Annotated[
        list[str] | None, typer.Option("--feedback", help="A person's report, in words (repeatable).")
    ] = None,
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Decide now (within a few seconds) and exit.")] = False,
    interval: Annotated[float | None, typer.Option(help="Seconds between rounds (continuous mode).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """What is wrong now: the gaps detection would open, as a table or JSON (`--once`), or follow them."""
    if estate is None and not log and not alerts and not feedback:
        _fail("give --estate FILE and/or --log FILE (or --alerts FILE, --feedback TEXT) to detect on")
    settings = _settings()
    cfg = _config(config, interval)
    if estate is not None:
        _load_estate(estate)  # a broken estate file is a usage error, named
    if not once:
        raise typer.Exit(_follow(settings, estate, cfg, log or []))
    from agentheal.detect.alerts import AlertError
    from agentheal.detect.detector import Detector
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import EstateError
    from agentheal.events import EventStore, EventStoreError

    backend = LocalBackend.from_settings(_load_estate(estate), settings) if estate is not None else None
    try:
        events = EventStore(settings.events_url)
    except EventStoreError as exc:
        _err(f"warning: history not read (no recurring or weakness gaps): {exc}")
        events = None
    detector = Detector(settings, cfg, backend, list(log or []), persist=False, events=events)
    for file in alerts or []:
        try:
            detector.alert(file.read_bytes())
        except OSError as exc:
            detector.reports.append(f"alert file {file} skipped: {exc.strerror or exc}")
        except AlertError as exc:
            detector.reports.append(f"alert file {file} skipped: {exc}")
    for text in feedback or []:
        try:
            detector.feedback(text)
        except (AlertError, EstateError) as exc:
            detector.reports.append(f"feedback skipped: {exc}")
    tracked = detector.once()
    detector.close()
    if events is not None:
        events.close()
    _warn(detector.take_reports())
    if as_json:
        _print_json([t.as_json() for t in tracked])
    elif not tracked:
        typer.echo("no gaps: everything detected is healthy")
    else:
        from rich.console import Console

        from agentheal.detect.view import gaps_table

        Console(highlight=False).print(gaps_table(tracked, title=f"{len(tracked)} gap(s)"))
    raise typer.Exit(EXIT_OK)


def _printer() -> Any:
    def say(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{stamp} {line}\n")
        sys.stdout.flush()

    return say


def _follow(settings: Any, estate: Path | None, cfg: Any, logs: list[Path]) -> int:
    """Continuous detection with no healing: print gaps as they open and close."""
    from agentheal.detect.watch import Watch

    w = Watch(settings, estate.resolve() if estate else None, cfg, heal=False, logs=logs, say=_printer())
    return w.run()


LISTEN_GONE = (
    "watch --listen is gone: alerts and feedback now go to the HTTP API, with its tokens. Run "
    "`agentheal serve --estate FILE --watch` and point Alertmanager at POST /alerts/alertmanager "
    "(feedback: POST /feedback), with `Authorization: Bearer TOKEN` of an operator token "
    "(`agentheal tokens add NAME --role operator`)"
)


@app.command()
def watch(
    estate: EstateOpt = None,
    log: LogOpt = None,
    config: ConfigOpt = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="Gone: alerts and feedback go to `agentheal serve --watch` (POST /alerts/alertmanager)."
        ),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between probe rounds.")] = None,
    max_heals: Annotated[int | None, typer.Option(help="Heals running at once.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan heals; change nothing.")] = False,
    no_heal: Annotated[bool, typer.Option("--no-heal", help="Detect only.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Log lines instead of the live view.")] = False,
) -> None:
    """Detect and heal continuously until SIGTERM or Ctrl-C (running heals finish first)."""
    from agentheal.detect.watch import Watch

    if listen is not None:
        _fail(LISTEN_GONE)
    if estate is None:
        _fail("give the estate to watch: --estate FILE")
    settings = _settings()
    cfg = _config(config, interval, max_heals)
    _load_estate(estate)
    if policy is not None:
        from agentheal.policy import PolicyError, load_policy

        try:
            load_policy(policy, settings)
        except PolicyError as exc:
            _fail(str(exc))
    live = not plain and sys.stdout.isatty()
    w = Watch(
        settings, estate.resolve(), cfg, heal=not no_heal, logs=list(log or []),
        policy_path=policy, dry_run=dry_run, say=(lambda line: None) if live else _printer(), live=live,
    )  # fmt: skip
    raise typer.Exit(w.run())


feedback_app = typer.Typer(
    help="Tell detection what is noise: mute a log template or a gap's fingerprint.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("mute")
def feedback_mute(
    target: Annotated[
        str,
        typer.Argument(
            help="A gap's fingerprint (16 hex digits), or a log template or part of one, e.g. "
            "'cache: miss for key'."
        ),
    ],
    duration: Annotated[
        str | None, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d (default: until unmuted).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Mute a template or a fingerprint: it opens no gap (at the next round of a running watch)."""
    from agentheal.services.feedback import MuteError, mute

    try:
        made = mute(_settings(), target, duration)
    except MuteError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(made.model_dump(mode="json"))
        raise typer.Exit(EXIT_OK)
    until = (
        "until unmuted"
        if made.until is None
        else "until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(made.until))
    )
    typer.echo(f"muted {made.kind} {made.target!r} {until}")
    raise typer.Exit(EXIT_OK)


@feedback_app.command("unmute")
def feedback_unmute(target: Annotated[str, typer.Argument(help="What `feedback mute` was given.")]) -> None:
    """End a mute: the template or fingerprint opens gaps again."""
    from agentheal.services.feedback import unmute

    ended = unmute(_settings(), target)
    if ended is None:
        _fail(f"{target!r} is not muted (`agentheal feedback mutes` lists what is)")
    typer.echo(f"unmuted {ended.kind} {ended.target!r}")
    raise typer.Exit(EXIT_OK)


@feedback_app.command("mutes")
def feedback_mutes(as_json: JsonFlag = False) -> None:
    """The mutes in force now."""
    from agentheal.services.feedback import active_mutes

    found = active_mutes(_settings())
    if as_json:
        _print_json([m.model_dump(mode="json") for m in found])
        raise typer.Exit(EXIT_OK)
    if not found:
        typer.echo("nothing is muted")
    for m in found:
        until = (
            "until unmuted"
            if m.until is None
            else time.strftime("until %Y-%m-%d %H:%M", time.localtime(m.until))
        )
        typer.echo(f"{m.kind:<11} {until:<22} {m.target}")
    raise typer.Exit(EXIT_OK)
