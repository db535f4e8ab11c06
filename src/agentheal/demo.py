"""`agentheal demo`: the shopfront estate broken ten ways and healed, live, with no LLM and nothing to set up.

It creates a temporary home, copies the shopfront sample estate onto free ports and starts it,
then watches it exactly as `agentheal watch` does. The faults are injected one after another;
each is found by the detection engine (never read from the fault's record), healed through the
heal graph, validated, and checked again against the estate's own probes and facts. The screen
shows component health, the open gaps and each heal node by node; at the end a table of what was
measured, every follow-up gap each fault caused with why it closed, every escalation as a
finding with its reason, and a report (Markdown and JSON) whose path is printed.

One home serves the whole demo, with a policy file written into it that allows the restarts a
drill needs (the built-in limit is 3 per component in 10 minutes). Every process it starts is
stopped at the end, also on Ctrl-C or SIGTERM: the estate is stopped in a `finally`, then every
process group still running from the temporary folder is killed.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentheal.eval.results import ScenarioResult

# The faults in the order the demo injects them, each on the component it suits best.
DEMO_FAULTS: list[tuple[str, str]] = [
    ("process_killed", "api"),
    ("crash_loop", "inventory"),
    ("data_over_budget", "api"),
    ("log_over_budget", "inventory"),
    ("memory_leak", "api"),
    ("dependency_down", "inventory"),
    ("bad_release", "api"),
    ("latency_regression", "api"),
    ("queue_stalled", "worker"),
    ("stale_lock", "worker"),
]
_EXIT_INTERRUPTED = 130
# Per fault: each gap the watch opened and why it closed (filled by `_run_faults`, read by `_finish`).
FOLLOW_UPS: dict[str, list[str]] = {}


class DemoError(Exception):
    """A `--faults` choice the demo cannot run."""


def choose_faults(spec: str | None) -> list[tuple[str, str]]:
    """The faults to run: all of DEMO_FAULTS, or `a,b` / `a:component,b` in the order given.

    Raises:
        DemoError: An unknown fault, or a component that is not in the shopfront estate.
    """
    if spec is None or not spec.strip():
        return list(DEMO_FAULTS)
    from agentheal.eval.faults import FAULTS

    default = dict(DEMO_FAULTS)
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, component = part.partition(":")
        if name not in FAULTS:
            raise DemoError(f"--faults: unknown fault {name!r} (known: {', '.join(FAULTS)})")
        if component and component not in ("api", "inventory", "worker"):
            raise DemoError(f"--faults: {part!r}: shopfront has api, inventory and worker")
        chosen.append((name, component or default[name]))
    if not chosen:
        raise DemoError("--faults: name at least one fault")
    return chosen


def _interrupt(signum: int, frame: Any) -> None:
    # Once: the clean-up that follows must not be cut short by a second Ctrl-C.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def _demo_scenario(fault: str, component: str) -> Any:
    from agentheal.eval.scenario import Expect, FaultStep, Scenario

    # dependency_down: detection finds the dependency itself down, so availability may heal it too
    personas = ["availability", "dependencies"] if fault == "dependency_down" else None
    step = FaultStep(fault=fault, component=component, personas=personas)
    return Scenario(
        name=f"{fault}-{component}",
        description=f"{fault} on {component}",
        faults=[step],
        # quiet_s: a follow-up gap of the same incident may still be dispatched just after the fix
        expect=Expect(detect_within_s=15, heal_within_s=30, quiet_s=1.5),
    )


def run_demo(keep: bool = False, faults: str | None = None, report: Path | None = None) -> int:
    """Run the demo; 0 when every fault in it was healed, 1 when one was not, 130 when interrupted.

    Args:
        keep: Keep the temporary folder (estate copy and home) instead of removing it.
        faults: `a,b` to run a subset of the faults (optionally `name:component`).
        report: The Markdown report's path (the JSON goes beside it); default
            `agentheal-demo-report.md` in the current folder.
    """
    from rich.console import Console

    try:
        plan = choose_faults(faults)
    except DemoError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    FOLLOW_UPS.clear()
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=150)  # a log file: no need to wrap at 80 columns
    folder = Path(tempfile.mkdtemp(prefix="agentheal-demo-"))
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    results: list[ScenarioResult] = []
    began = time.time()
    code = 1
    session = observer = None
    try:
        from agentheal.eval.observer import Observer
        from agentheal.eval.session import EstateSession

        console.rule("[bold]agentheal demo[/]: the shopfront estate, broken and healed, no LLM")
        console.print(f"temporary home {folder / 'home'}", markup=False)
        session = EstateSession(folder, "shopfront", llm_url=None)
        session.start()
        console.print(f"estate {session.estate_file}: {', '.join(session.estate.order())} up", markup=False)
        observer = Observer(session)
        results = _run_faults(console, session, observer, plan)
        code = 0 if len(results) == len(plan) and all(r.healed for r in results) else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the estate[/]")
        code = _EXIT_INTERRUPTED
    finally:
        # Nothing may interrupt the clean-up: it is what leaves no process behind.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        if observer is not None:
            observer.stop(timeout_s=20.0)
            observer.events.close()
        if session is not None:
            leftovers = session.stop()
            if leftovers:
                console.print(
                    f"killed {len(leftovers)} process(es) still running: {leftovers[0]}", markup=False
                )
        for s, handler in previous.items():
            signal.signal(s, handler)
    if results:
        _finish(console, results, plan, began, report, code == _EXIT_INTERRUPTED)
    if keep:
        console.print(f"kept {folder}", markup=False)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return code


def follow_ups(lines: list[tuple[float, str]], since: float) -> list[str]:
    """The gaps watch opened from `since` on, each with how it ended: why it closed, or still open.

    Args:
        lines: The watch's log lines with their times (`Observer.lines`).
        since: When the fault was injected.
    """
    opened: dict[str, str] = {}  # "component: text" -> the gap as opened
    ends: dict[str, str] = {}
    for at, line in lines:
        if at < since:
            continue
        if line.startswith("gap opened: "):
            _, _, rest = line.partition("gap opened: ")
            head, _, text = rest.partition(": ")
            parts = head.split()
            component = parts[1] if len(parts) > 1 else "-"
            opened.setdefault(f"{component}: {text.split(' (follows ')[0]}", rest)
        elif line.startswith("gap closed: "):
            rest = line.removeprefix("gap closed: ")
            key, _, why = rest.rpartition(" (")
            ends[key] = why.rstrip(")") if key else rest
    return [f"{gap} -> {ends.get(key, 'still open at the end of the fault')}" for key, gap in opened.items()]


def escalations(result: ScenarioResult) -> list[str]:
    """The runs of a fault that ended escalated, each with its gap and status: findings to read."""
    return [f"{r.component or '-'}: {r.gap} ({r.status})" for r in result.runs if r.status == "escalated"]


def _run_faults(
    console: Any, session: Any, observer: Any, plan: list[tuple[str, str]]
) -> list[ScenarioResult]:
    from rich.live import Live

    from agentheal.eval.drill import Drill
    from agentheal.eval.live import DemoView, node_line
    from agentheal.eval.score import score

    view = DemoView(observer, total=len(plan))
    live = None
    if console.is_terminal:
        live = Live(view, console=console, refresh_per_second=4, transient=True)
        say = view.note
    else:

        def say(line: str) -> None:
            view.note(line)
            console.print(f"{time.time() - view.began:6.1f}s {line}", markup=False, soft_wrap=True)

        runs: dict[str, str | None] = {}

        def node(seen: Any) -> None:
            if seen.node == "triage":
                runs[seen.run_id] = seen.detail.split(":", 1)[0]
            console.print("        " + node_line(seen, runs.get(seen.run_id)), markup=False, soft_wrap=True)

        observer.on_node = node
    results: list[ScenarioResult] = []
    if live is not None:
        live.start()
    try:
        view.current = "watching the healthy estate"
        observer.start()
        for i, (fault, component) in enumerate(plan, 1):
            scenario = _demo_scenario(fault, component)
            view.current = f"fault {i}/{len(plan)}: {fault} on {component}"
            view.since = since = time.time()
            say(view.current)
            drill = Drill(observer, session, scenario.faults, scenario.expect, say=say).run()
            drill.drain(timeout_s=30.0)
            result = score(drill.collect(), scenario)
            results.append(result)
            view.results = list(results)
            say(f"{fault}: " + ("healed" if result.healed else f"NOT healed: {result.reason}"))
            _settle(session, observer)
            FOLLOW_UPS[result.name] = follow_ups(list(observer.lines), since)
    finally:
        if live is not None:
            live.stop()
    return results


def _settle(session: Any, observer: Any, timeout_s: float = 20.0) -> None:
    """Before the next fault: every component healthy and no heal running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not observer.heals_running() and session.healthy():
            return
        time.sleep(0.2)


def _finish(
    console: Any,
    results: list[ScenarioResult],
    plan: list[tuple[str, str]],
    began: float,
    report: Path | None,
    interrupted: bool,
) -> None:
    from agentheal.eval.live import results_table
    from agentheal.eval.report import markdown
    from agentheal.eval.runner import document, write_json

    took = time.time() - began
    console.print(results_table(results))
    healed = sum(r.healed for r in results)
    other = sum(max(0, len(r.runs) - 1) for r in results)
    console.print(
        f"{healed}/{len(plan)} faults healed, {sum(r.wrong_actions for r in results)} wrong action(s), "
        f"{sum(r.llm_calls for r in results)} LLM call(s), {other} other heal run(s) on follow-up gaps, "
        f"in {took:.0f} s" + (" (interrupted)" if interrupted else ""),
        markup=False,
    )
    for r in results:
        if not r.healed:
            console.print(f"  not healed: {r.name}: {r.reason}", markup=False)
    found = {r.name: escalations(r) for r in results}
    console.print(f"{sum(map(len, found.values()))} escalation(s)", markup=False)
    for name, runs in found.items():
        for run in runs:
            console.print(f"  finding: {name}: escalated: {run}", markup=False)
    section = ["", "## Follow-up gaps and escalations", ""]
    for r in results:
        seen = FOLLOW_UPS.get(r.name, [])
        console.print(f"{r.name}: {len(seen)} gap(s) seen", markup=False)
        section.append(f"- **{r.name}**: {len(seen)} gap(s) seen, {len(found[r.name])} escalation(s)")
        for line in seen:
            console.print(f"  {line}", markup=False)
            section.append(f"  - {line}")
        section += [f"  - finding: escalated: {run}" for run in found[r.name]]
    doc = document(results, "offline", None, began)
    doc["run"]["what"] = "agentheal demo"
    doc["follow_ups"] = {
        r.name: {"gaps": FOLLOW_UPS.get(r.name, []), "escalations": found[r.name]} for r in results
    }
    if interrupted:
        doc["run"]["interrupted"] = True
    md = (report or Path("agentheal-demo-report.md")).resolve()
    try:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(
            markdown(doc, title="agentheal demo report") + "\n".join(section) + "\n", encoding="utf-8"
        )
        write_json(md.with_suffix(".json"), doc)
    except OSError as exc:
        console.print(f"report not written to {md}: {exc}", markup=False)
        return
    console.print(f"report: {md} (and {md.with_suffix('.json').name})", markup=False)
