"""`agentheal fault list` and `agentheal fault inject NAME --estate FILE --component C`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentheal.cli._common import (
    EXIT_NOT_HEALED,
    EXIT_OK,
    _audit,
    _err,
    _fail,
    _load_estate,
    _print_json,
    _settings,
    app,
)

fault_app = typer.Typer(
    help="Real faults to inject into a running estate: for the demo, the eval and your own drills.",
    no_args_is_help=True,
)
app.add_typer(fault_app, name="fault")

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]


@fault_app.command("list")
def fault_list(
    estate: Annotated[
        Path | None, typer.Option(help="Also show which components of this estate each fault applies to.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One fault per line: its name and what it does."""
    from agentheal.eval.faults import FAULTS

    loaded = _load_estate(estate) if estate is not None else None
    where = {name: f.applies_to(loaded) for name, f in FAULTS.items()} if loaded is not None else {}
    if as_json:
        _print_json(
            [
                {"name": f.name, "description": f.description, "needs": f.needs}
                | ({"components": where[f.name]} if loaded is not None else {})
                for f in FAULTS.values()
            ]
        )
        raise typer.Exit(EXIT_OK)
    width = max(len(name) for name in FAULTS)
    for fault in FAULTS.values():
        line = f"{fault.name:<{width}}  {fault.description}"
        if loaded is not None:
            line += f" [{', '.join(where[fault.name]) or 'applies to no component'}]"
        typer.echo(line)
    raise typer.Exit(EXIT_OK)


@fault_app.command("inject")
def fault_inject(
    name: Annotated[str, typer.Argument(help="The fault (see `agentheal fault list`).")],
    estate: Annotated[Path, typer.Option(help="The estate file.", envvar="AGENTHEAL_ESTATE")],
    component: Annotated[str, typer.Option(help="The component to break.")],
    as_json: JsonFlag = False,
) -> None:
    """Break a component of a running estate for real; only healing undoes it.

    Exit codes: 0 injected, 1 the estate is not in a state the fault needs (e.g. the component
    is not running), 2 unknown fault, estate or component, or a fault that does not apply.
    """
    from agentheal.estate.local import LocalBackend
    from agentheal.eval.faults import FaultError, get_fault

    try:
        fault = get_fault(name)
    except FaultError as exc:
        _fail(str(exc))
    loaded = _load_estate(estate)
    if component not in loaded.components:
        known = ", ".join(sorted(loaded.components))
        _fail(f"unknown component {component!r}: the estate {loaded.name!r} has {known}")
    applies = fault.applies_to(loaded)
    if component not in applies:
        _fail(
            f"fault {fault.name} does not apply to {component}: it needs {fault.needs} "
            f"(applies to: {', '.join(applies) or 'no component of this estate'})"
        )
    settings = _settings()
    backend = LocalBackend.from_settings(loaded, settings)
    try:
        record = fault.inject(backend, component)
    except FaultError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_NOT_HEALED) from None
    _audit(settings, "fault", component, f"{fault.name} injected into {component}", fault=fault.name)
    if as_json:
        _print_json(record.model_dump(mode="json"))
    else:
        typer.echo(f"injected {record.fault} into {record.component}:")
        for line in record.did:
            typer.echo(f"  {line}")
        typer.echo(f"symptom ({record.gap_component}): {record.symptom}")
        typer.echo(f"expected facts: {', '.join(record.breaks)}")
        typer.echo(f"expected heal: {record.expected.persona}: {', '.join(record.expected.actions)}")
    raise typer.Exit(EXIT_OK)
