"""Validation by replay: the recorded history an evolution concerns, played again on two fresh copies
of the estate — one with the files as they were before the evolution, one with the evolution — and
judged on each copy's own event store.

What is replayed. A pattern is a fingerprint healed again and again; its recorded heals name the
remediation that healed it (rotate_logs, clean_dir, restart, …), and the eval fault whose expected
heal is that remediation reproduces it (`FAULT_FOR_ACTION`; checked against the fault's own
record when injected). The replay brings the fault back as often as the history saw it, at the
recorded median interval. A fault that fills something (a log, a data folder) fills it steadily
over each interval, as a disk fills between recurrences; any other fault is injected once per
interval, as it was reported.

How. Each arm is a copy of the estate's folder (without its runtime folders: logs, data, queue)
whose declared ports are replaced by free ones, so it runs beside the estate itself, with a home of
its own (event store, memory, checkpoints) holding the home's policy, schedule, checks and
generated personas — the evolution's target at its previous version in the *before* arm, at its
new one in the *after* arm. Time is virtual: it advances by a fixed step per tick, whatever the
host's speed, so a replay of hours takes seconds and two runs of it tick alike. Each tick the fault
advances, the maintenance actions the schedule makes due at that virtual time run through the
prevent graph (policy-checked, as `agentheal prevent` runs them), detection looks at the real
processes and files, and every root gap it finds is healed by the heal graph. Rate limits count
in real seconds, so a replay meets them sooner than the history did — in both arms alike.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.event_schema import ACTIONS, RUNS

if TYPE_CHECKING:
    from agentheal.estate.local import LocalBackend
    from agentheal.events import EventStore

# The remediation that healed a pattern -> the eval fault that breaks a component so (in order of
# preference: a heal of a killed worker also removes its stale lock; restart is what it needed).
FAULT_FOR_ACTION = {
    "rotate_logs": "log_over_budget",
    "clean_dir": "data_over_budget",
    "restore_config": "crash_loop",
    "rollback_release": "bad_release",
    "set_flag": "latency_regression",
    "restart": "process_killed",
    "remove_stale_lock": "stale_lock",
}
FILLS = frozenset({"log_over_budget", "data_over_budget"})
TICKS_PER_INTERVAL = 3
MAX_OCCURRENCES = 4
_MB = 1024 * 1024
# The files of the home that shape a heal or a maintenance round, carried into each arm's home.
CARRIED = ("evolution/schedule.yaml", "evolution/checks.yaml")
# A new SQLite event store is brought to the current schema by alembic, whose migration context is
# one per process: the two arms must not create theirs at the same moment (seen: "table runs
# already exists" in the other arm's store). Their memory and checkpoint stores are made under the
# same lock, so no library's setup ever runs in two threads at once.
_NEW_STORE = threading.Lock()


class ReplayError(Exception):
    """A replay could not run to the end (the copy did not start, a fault could not be injected)."""


@dataclass(frozen=True)
class Script:
    """What a replay plays: a fault on a component of an estate (its file), `occurrences` times."""

    estate: str
    component: str
    fault: str
    action: str
    fingerprint: str
    interval_s: float
    occurrences: int


def script_for(
    events: EventStore, estate_file: Path | None, fingerprint: str | None, since: Any
) -> Script | str:
    """The replay of a pattern's recorded history on the estate in `estate_file`, or why there is none."""
    from agentheal.estate.model import load_estate

    if fingerprint is None:
        return "the evolution names no pattern"
    if estate_file is None:
        return "no estate given (agentheal evolve --estate FILE)"
    estate = load_estate(estate_file)
    runs = events.query(
        sa.select(RUNS.c.run_id, RUNS.c.component, RUNS.c.started_at)
        .where(RUNS.c.fingerprint == fingerprint, RUNS.c.started_at >= since)
        .order_by(RUNS.c.started_at)
    )  # fmt: skip
    if len(runs) < 2 or runs[-1]["component"] is None:
        return "fewer than two recorded runs of the pattern on a component"
    used = {
        r["action"]
        for r in events.query(
            sa.select(ACTIONS.c.action).where(
                ACTIONS.c.run_id.in_([r["run_id"] for r in runs]),
                ACTIONS.c.dry_run.is_(False),
                ACTIONS.c.outcome == "ok",
            )
        )
    }
    action = next((a for a in FAULT_FOR_ACTION if a in used), None)
    if action is None:
        return f"no recorded remediation of the pattern has a fault that reproduces it ({sorted(used)})"
    component = str(runs[-1]["component"])
    fault = FAULT_FOR_ACTION[action]
    from agentheal.eval.faults import get_fault

    if component not in get_fault(fault).applies_to(estate):
        return f"fault {fault} does not apply to {component}"
    times = [r["started_at"] for r in runs]
    interval = statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(times))
    return Script(
        estate=str(estate_file), component=component, fault=fault, action=action, fingerprint=fingerprint,
        interval_s=max(interval, 1.0), occurrences=min(len(runs), MAX_OCCURRENCES),
    )  # fmt: skip


def home_files(home: Path, policy_file: Path | None) -> dict[str, bytes]:
    """The files of `home` each arm starts from: the policy (as `policy.yaml`), the schedule and
    checks, the generated personas."""
    files = {rel: (home / rel).read_bytes() for rel in CARRIED if (home / rel).is_file()}
    if policy_file is not None and policy_file.is_file():
        files["policy.yaml"] = policy_file.read_bytes()
    personas = home / "personas"
    if personas.is_dir():
        files |= {f"personas/{p.name}": p.read_bytes() for p in sorted(personas.glob("*.md"))}
    return files


def staged_copy(estate_file: Path, dest: Path) -> Path:
    """A copy of the estate's folder, without its runtime folders, whose declared ports (`port:`)
    are free ones in its estate file (whole numbers only: port 8080 must not rewrite 18080).

    Raises:
        ReplayError: The estate cannot be copied, or its copy is not a valid estate.
    """
    from agentheal.estate.model import EstateError, load_estate
    from agentheal.eval.estates import free_ports
    from agentheal.eval.session import SessionError, prepare_estate

    try:
        copy = prepare_estate(str(estate_file.resolve()), dest)
        ports = [c.port for c in load_estate(copy).components.values() if c.port]
        fresh = dict(zip(ports, free_ports(len(ports)), strict=True))
        if fresh:
            pattern = re.compile(r"(?<!\d)(" + "|".join(str(p) for p in fresh) + r")(?!\d)")
            text = pattern.sub(lambda m: str(fresh[int(m.group(1))]), copy.read_text(encoding="utf-8"))
            copy.write_text(text, encoding="utf-8")
        load_estate(copy)
    except (SessionError, EstateError, OSError) as exc:
        raise ReplayError(f"cannot copy the estate {estate_file} for a replay: {exc}") from exc
    return copy


class _Fill:
    """A log or data folder filling steadily: `1.25 ×` its budget over each interval."""

    def __init__(self, backend: LocalBackend, component: str, fault: str) -> None:
        comp = backend.estate.component(component)
        if fault == "log_over_budget":
            assert comp.log_budget_mb is not None
            self.path, self.budget = backend.estate.path(comp.logs[0]), comp.log_budget_mb
            self.log = True
        else:
            data = next(d for d in comp.data_dirs if d.budget_mb)
            assert data.budget_mb is not None
            self.path, self.budget = backend.estate.path(data.path), data.budget_mb
            self.log = False
        self.component = component
        self.n = 0

    def add(self, share: float) -> None:
        need = int(self.budget * 1.25 * _MB * share) + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.log:
            self.path.mkdir(parents=True, exist_ok=True)
            self.n += 1
            (self.path / f"replay-{self.n:05d}.part").write_bytes(b"\0" * need)
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp}.000 DEBUG {self.component}: cache lookup key=product:SKU-0001 hit=false ttl=30\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line * (need // len(line) + 1))


def _inject(script: Script, backend: LocalBackend, notes: list[str], tick: int) -> None:
    from agentheal.eval.faults import FaultError, get_fault

    try:
        record = get_fault(script.fault).inject(backend, script.component)
    except FaultError as exc:  # still broken from the last time: it was not healed
        notes.append(f"tick {tick}: {script.fault} not injected: {exc}")
        return
    if not any(a.startswith(f"{script.action}(") for a in record.expected.actions):
        raise ReplayError(
            f"{script.fault} on {script.component} is healed by {record.expected.actions}, "
            f"not {script.action}: it does not reproduce the pattern"
        )


def run_arm(
    script: Script, files: dict[str, bytes], folder: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Play the script on a fresh copy of the estate whose home holds `files`; its figures."""
    from agentheal.detect import DetectConfig, Detector
    from agentheal.eval.session import EstateSession, SessionError
    from agentheal.events import EventStore
    from agentheal.evolve.judge import stats
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.prevent import PreventJob, prevent_round
    from agentheal.graphs.runner import Healer
    from agentheal.metrics.figures import Window
    from agentheal.models import utcnow
    from agentheal.policy import PolicyError, load_policy

    policy = files["policy.yaml"].decode("utf-8") if "policy.yaml" in files else None
    staged = staged_copy(Path(script.estate), folder / "staged")
    try:
        session = EstateSession(folder / "arm", str(staged), policy=policy)
    except SessionError as exc:
        raise ReplayError(f"the estate copy could not be prepared: {exc}") from exc
    home = session.settings.home_dir
    for rel, data in files.items():
        if rel != "policy.yaml":
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_bytes(data)
    notes: list[str] = []
    began = utcnow()
    events = detector = None
    stack = contextlib.ExitStack()
    try:
        session.start()
        ctx = HealContext(session.settings, session.estate_file, policy_path=session.policy_file)
        with _NEW_STORE:
            events = EventStore(session.settings.events_url)
            ctx.memory.count()
            healer = stack.enter_context(Healer(ctx))
        detector = Detector(session.settings, DetectConfig(n=2, once_spacing_s=0.05), session.backend)
        maintain = PreventJob(
            events, DetectConfig(), {}, backend=session.backend,
            policy=load_policy(session.policy_file, session.settings), home=home,
        )  # fmt: skip
        fill = _Fill(session.backend, script.component, script.fault) if script.fault in FILLS else None
        step = script.interval_s / TICKS_PER_INTERVAL
        clock = time.time()
        heals = 0
        for tick in range(script.occurrences * TICKS_PER_INTERVAL + 1):
            clock += step
            occurs = tick % TICKS_PER_INTERVAL == TICKS_PER_INTERVAL - 1
            if fill is not None and tick < script.occurrences * TICKS_PER_INTERVAL:
                fill.add(1 / TICKS_PER_INTERVAL)
            elif fill is None and occurs:
                _inject(script, session.backend, notes, tick)
            for line in prevent_round(maintain, now=clock)["notes"]:
                notes.append(f"tick {tick}: {line}")
            maintain.notes.clear()
            for tracked in detector.once():
                if tracked.gap.root is None:
                    healer.heal(tracked.gap)
                    heals += 1
        figures = stats(events, script.fingerprint, Window(began - timedelta(seconds=1), utcnow()))
        say(f"replay {folder.name}: {figures}")
        return figures | {"heals_started": heals, "notes": notes[:20]}
    except (SessionError, PolicyError) as exc:
        raise ReplayError(f"the estate copy did not start, or its policy is not valid: {exc}") from exc
    finally:
        stack.close()
        if detector is not None:
            detector.close()
        if events is not None:
            events.close()
        session.stop()


def replay(
    script: Script,
    before: dict[str, bytes],
    after: dict[str, bytes],
    say: Callable[[str], None] = lambda line: None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Both arms side by side: neither runs on caches the other warmed, and a replay takes the time
    of one arm (each arm waits on probes and processes more than it computes).

    Returns:
        `script`, `before` and `after` (each arm's figures), `took_s`.

    Raises:
        ReplayError: An arm could not run to its end.
    """
    from concurrent.futures import ThreadPoolExecutor

    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="agentheal-replay-", dir=workdir))
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="replay") as pool:
            arms = {name: pool.submit(run_arm, script, files, root / name, say)
                    for name, files in (("before", before), ("after", after))}  # fmt: skip
            figures = {name: arm.result() for name, arm in arms.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"script": asdict(script), **figures, "took_s": round(time.monotonic() - began, 1)}
