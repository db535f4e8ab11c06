"""The local backend: the estate's components are real processes and files on this host.

State (pid records, config snapshots) lives in `state_dir`, normally `settings.estates_dir /
estate.name`, so a process started by `agentheal estate up` is found, probed, stopped and
restarted by any later agentheal process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentheal.estate import change_actions, changes, files, observe
from agentheal.estate.actions import CATALOGUE, ActionError, clean_dir_problem, validate_step
from agentheal.estate.facts import Fact as Fact  # re-exported: callers import it from here
from agentheal.estate.facts import compute_facts
from agentheal.estate.model import Estate, EstateError
from agentheal.estate.probes import ComponentHealth as ComponentHealth  # re-exported, like Fact
from agentheal.estate.probes import ProbeResult, run_probe
from agentheal.estate.process import (
    STOP_GRACE_S,
    exit_code,
    find_process,
    read_record,
    resolve_command,
    start_process,
    stop_process,
    write_record,
)
from agentheal.models import ActionResult, Step

if TYPE_CHECKING:
    from agentheal.config import Settings

Outcome = Literal["ok", "failed", "skipped", "dry_run"]

_POLL_S = 0.02  # a restart is done the moment its probes pass: look often
_NO_PROBE_SETTLE_S = 0.5
_LOG_TAIL_ON_FAILURE = 10

_OBSERVERS: dict[str, Callable[..., str]] = {
    "probe": observe.probe,
    "tail_logs": observe.tail_logs,
    "process_stats": observe.process_stats,
    "read_config": observe.read_config,
    "dependencies": observe.dependencies,
    "releases": observe.releases,
    "read_flags": observe.read_flags,
}


class LocalBackend:
    """Runs, probes and heals an estate's components as local processes."""

    def __init__(self, estate: Estate, state_dir: Path) -> None:
        self.estate = estate
        self.state_dir = Path(state_dir)

    @classmethod
    def from_settings(cls, estate: Estate, settings: Settings) -> LocalBackend:
        """The backend with its state in `settings.estates_dir / estate.name`."""
        return cls(estate, settings.estates_dir / estate.name)

    # -- lifecycle -------------------------------------------------------------------------------

    def up(self) -> list[ActionResult]:
        """Start every component in dependency order and wait until its probes pass.

        A component already running is left as it is (its probes are still awaited). Components
        that come up healthy get their configs snapshotted as last known good; a component whose
        dependency failed is skipped.
        """
        results: list[ActionResult] = []
        failed: set[str] = set()
        for name in self.estate.order():
            began = time.monotonic()
            broken = [d for d in self.estate.components[name].depends_on if d in failed]
            if broken:
                failed.add(name)
                detail = f"not started: dependency {', '.join(broken)} did not come up"
                results.append(ActionResult(action="start", component=name, outcome="skipped", detail=detail))
                continue
            started = find_process(read_record(self.state_dir, name)) is None
            result = self._start(name) if started else self._await(name, "start", began, "already running")
            if result.outcome == "failed":
                failed.add(name)
            else:
                # Only a config this up proved healthy becomes last known good; a process that was
                # already running may not have read a config changed under it, so its existing
                # snapshots are kept.
                self._snapshot(name, only_missing=not started)
            results.append(result)
        return results

    def down(self) -> list[ActionResult]:
        """Stop every component, dependents first (process groups: SIGTERM, then SIGKILL)."""
        results = []
        for name in reversed(self.estate.order()):
            began = time.monotonic()
            detail = stop_process(self.state_dir, name)
            results.append(
                ActionResult(
                    action="stop", component=name, detail=detail, duration_s=time.monotonic() - began
                )
            )
        return results

    def status(self) -> list[ComponentHealth]:
        """The health of every component, in dependency order."""
        return [self.health(name) for name in self.estate.order()]

    def health(self, component: str) -> ComponentHealth:
        """Is the component's process running and does every probe pass?"""
        comp = self.estate.component(component)
        record = read_record(self.state_dir, component)
        proc = find_process(record)
        probes = self.probe(component)
        passed = sum(p.ok for p in probes)
        if proc is None:
            detail = f"not running ({self._why_down(component)})"
        else:
            detail = f"pid {proc.pid} up {time.time() - proc.create_time():.0f} s"
        if probes:
            detail += f"; {passed}/{len(probes)} probes ok"
            failing = [p.line() for p in probes if not p.ok]
            if failing:
                detail += ": " + "; ".join(failing)
        elif not comp.probes:
            detail += "; no probes declared"
        return ComponentHealth(
            name=component,
            healthy=proc is not None and passed == len(probes),
            running=proc is not None,
            pid=proc.pid if proc is not None else None,
            uptime_s=round(time.time() - proc.create_time(), 1) if proc is not None else None,
            probes=probes,
            detail=detail,
        )

    def probe(self, component: str) -> list[ProbeResult]:
        """Run the component's probes once (a TCP probe on `port` when none are declared)."""
        comp = self.estate.component(component)
        cwd = self.estate.path(comp.workdir)
        return [run_probe(p, cwd if cwd.is_dir() else None, comp.env) for p in comp.effective_probes]

    def facts(self, component: str) -> list[Fact]:
        """What is true of the component now, in the facts vocabulary, each with its evidence."""
        return compute_facts(self, component)

    def observe(self, name: str, component: str, **args: Any) -> str:
        """A read-only observation by action name (`probe`, `tail_logs`, ...), as text.

        Raises:
            ActionError: Unknown or non-observation action, unknown component, or bad arguments.
        """
        spec = CATALOGUE.get(name)
        if spec is not None and not spec.read_only:
            raise ActionError(
                f"{name!r} is not a read-only observation (observations: {', '.join(_OBSERVERS)})"
            )
        problems = validate_step(Step(action=name, component=component, args=args), self.estate)
        if problems:
            raise ActionError("; ".join(problems))
        assert spec is not None  # validate_step names an unknown action
        parsed = spec.args_model.model_validate(args).model_dump()
        return _OBSERVERS[name](self, component, **parsed)

    def snapshot_configs(self, component: str) -> None:
        """Keep the component's current config files, flags and release as last known good."""
        self._snapshot(component)

    def _snapshot(self, component: str, only_missing: bool = False) -> None:
        files.snapshot_configs(self.estate, self.state_dir, component, only_missing=only_missing)
        changes.snapshot_flags(self.estate, self.state_dir, component, only_missing=only_missing)
        changes.snapshot_release(self.estate, self.state_dir, component, only_missing=only_missing)

    def wait_healthy(self, component: str, timeout_s: float | None = None) -> tuple[bool, str]:
        """Poll the process and probes every 0.1 s until they pass or the timeout ends.

        Returns:
            (healthy, detail); on failure the detail carries the last probe result and the log tail.
        """
        comp = self.estate.component(component)
        timeout = comp.start_timeout_s if timeout_s is None else timeout_s
        began = time.monotonic()
        deadline = began + timeout
        probes = comp.effective_probes
        last = "no probe ran"
        while True:
            record = read_record(self.state_dir, component)
            if find_process(record) is None:
                code = exit_code(record)
                why = f"exited with code {code}" if code is not None else "is not running"
                return (
                    False,
                    f"{component} {why} {time.monotonic() - began:.1f} s after start"
                    + self._log_tail(component),
                )
            if probes:
                results = self.probe(component)
                if all(r.ok for r in results):
                    return (
                        True,
                        f"{len(results)}/{len(results)} probes ok after {time.monotonic() - began:.1f} s",
                    )
                last = "; ".join(r.line() for r in results if not r.ok)
            elif time.monotonic() - began >= min(_NO_PROBE_SETTLE_S, timeout):
                return True, "running (no probes declared)"
            if time.monotonic() >= deadline:
                return (
                    False,
                    f"{component} did not pass its probes within {timeout:g} s: {last}"
                    + self._log_tail(component),
                )
            time.sleep(_POLL_S)

    # -- actions ---------------------------------------------------------------------------------

    def execute(self, step: Step, dry_run: bool = False) -> ActionResult:
        """Validate and run one step (or, with `dry_run`, say what it would do and change nothing).

        Raises:
            ActionError: The step is invalid; the message lists every problem.
        """
        problems = validate_step(step, self.estate)
        if problems:
            raise ActionError("; ".join(problems))
        spec = CATALOGUE[step.action]
        args = spec.args_model.model_validate(step.args).model_dump()
        began = time.monotonic()
        if spec.read_only:
            # Observations change nothing, so they run even in a dry run.
            text = _OBSERVERS[step.action](self, step.component, **args)
            return self._result(step, "ok", text, began, dry_run)
        try:
            result = getattr(self, f"_do_{step.action}")(step, args, dry_run, began)
        except (EstateError, OSError) as e:
            result = self._result(
                step, "failed", f"{step.action} of {step.component} failed: {e}", began, dry_run
            )
        assert isinstance(result, ActionResult)
        return result

    def _do_start(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        proc = find_process(read_record(self.state_dir, step.component))
        if proc is not None:
            return self._result(
                step, "skipped", f"{step.component} is already running (pid {proc.pid})", began, dry_run
            )
        if dry_run:
            return self._result(
                step, "dry_run", f"would start {self._describe_start(step.component)}", began, True
            )
        return self._start(step.component, began)

    def _do_restart(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        proc = find_process(read_record(self.state_dir, step.component))
        if dry_run:
            stop = f"stop pid {proc.pid} and " if proc is not None else "(not running) "
            return self._result(
                step, "dry_run", f"would {stop}start {self._describe_start(step.component)}", began, True
            )
        stopped = stop_process(self.state_dir, step.component)
        result = self._start(step.component, began)
        result.action, result.detail = "restart", f"{stopped}; {result.detail}"
        return result

    def _do_stop(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        if dry_run:
            proc = find_process(read_record(self.state_dir, step.component))
            what = (
                f"would stop pid {proc.pid} (SIGTERM to its process group, SIGKILL after {STOP_GRACE_S:g} s)"
                if proc is not None
                else f"{step.component} is not running; would do nothing"
            )
            return self._result(step, "dry_run", what, began, True)
        return self._result(step, "ok", stop_process(self.state_dir, step.component), began, False)

    def _do_restore_config(
        self, step: Step, args: dict[str, Any], dry_run: bool, began: float
    ) -> ActionResult:
        comp = self.estate.component(step.component)
        configs = [args["path"]] if args["path"] is not None else comp.configs
        if not configs:
            return self._result(step, "failed", f"{step.component} declares no config files", began, dry_run)
        done = [
            files.restore_config(self.estate, self.state_dir, step.component, c, dry_run) for c in configs
        ]
        ok = all(d[0] for d in done)
        outcome: Outcome = "failed" if not ok else ("dry_run" if dry_run else "ok")
        return self._result(step, outcome, "; ".join(d[1] for d in done), began, dry_run)

    def _do_rotate_logs(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        comp = self.estate.component(step.component)
        logs = [args["path"]] if args["path"] is not None else comp.logs
        if not logs:
            return self._result(step, "failed", f"{step.component} declares no log files", began, dry_run)
        detail = "; ".join(files.rotate_log(self.estate.path(log), args["keep"], dry_run) for log in logs)
        if not dry_run and self.estate.path(comp.logs[0]) in {self.estate.path(log) for log in logs}:
            # The process output log starts empty again: "since the last start" now means from 0.
            record = read_record(self.state_dir, step.component)
            if record.log_offset:
                record.log_offset = 0
                write_record(self.state_dir, step.component, record)
        return self._result(step, "dry_run" if dry_run else "ok", detail, began, dry_run)

    def _do_clean_dir(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        # Checked again here: a symlink may have been swapped since the plan was validated.
        problem = clean_dir_problem(self.estate, step.component, args["path"])
        if problem:
            raise ActionError(f"clean_dir on {step.component}: {problem}")
        protected = {
            self.estate.path(p) for c in self.estate.components.values() for p in [*c.logs, *c.configs]
        }
        _files, _bytes, detail = files.clean_dir(
            self.estate.path(args["path"]), args["older_than_s"], protected, dry_run
        )
        outcome: Outcome = "dry_run" if dry_run else "ok"
        if not self.estate.path(args["path"]).is_dir():
            outcome = "failed"
        return self._result(step, outcome, detail, began, dry_run)

    def _do_rollback_release(
        self, step: Step, args: dict[str, Any], dry_run: bool, began: float
    ) -> ActionResult:
        outcome, detail = change_actions.rollback_release(
            self.estate, self.state_dir, step.component, args["to"], dry_run
        )
        return self._result(step, outcome, detail, began, dry_run)

    def _do_set_flag(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        outcome, detail = change_actions.set_flag(self.estate, self.state_dir, step.component, args, dry_run)
        return self._result(step, outcome, detail, began, dry_run)

    def _do_remove_stale_lock(
        self, step: Step, args: dict[str, Any], dry_run: bool, began: float
    ) -> ActionResult:
        outcome, detail = change_actions.remove_stale_locks(
            self.estate, self.state_dir, step.component, args["path"], dry_run
        )
        return self._result(step, outcome, detail, began, dry_run)

    def _do_scale(self, step: Step, args: dict[str, Any], dry_run: bool, began: float) -> ActionResult:
        now, want = changes.replicas(self.estate, self.state_dir, step.component), args["replicas"]
        if dry_run:
            start = self._describe_start(step.component)
            what = f"would run {want} worker processes (now {now}): restart {start}"
            return self._result(step, "dry_run", what, began, True)
        changes.set_replicas(self.state_dir, step.component, want)
        changes.record_change(
            self.state_dir, step.component, {"action": "scale", "before": now, "after": want}
        )
        stopped = stop_process(self.state_dir, step.component)
        result = self._start(step.component, began)
        result.action = "scale"
        result.detail = (
            f"{now} -> {want} worker processes (undo: scale replicas={now}); {stopped}; {result.detail}"
        )
        return result

    # -- helpers ---------------------------------------------------------------------------------

    def _start(self, name: str, began: float | None = None) -> ActionResult:
        began = time.monotonic() if began is None else began
        try:
            count = changes.replicas(self.estate, self.state_dir, name)
            extra = {"AGENTHEAL_REPLICAS": str(count)} if count is not None else {}
            record = start_process(self.estate, name, self.state_dir, extra)
        except EstateError as e:
            return ActionResult(
                action="start",
                component=name,
                outcome="failed",
                detail=str(e),
                duration_s=time.monotonic() - began,
            )
        return self._await(name, "start", began, f"started pid {record.pid}")

    def _await(self, name: str, action: str, began: float, prefix: str) -> ActionResult:
        ok, detail = self.wait_healthy(name)
        return ActionResult(
            action=action,
            component=name,
            outcome="ok" if ok else "failed",
            detail=f"{prefix}; {detail}",
            duration_s=time.monotonic() - began,
        )

    def _result(self, step: Step, outcome: Outcome, detail: str, began: float, dry_run: bool) -> ActionResult:
        return ActionResult(
            action=step.action,
            component=step.component,
            dry_run=dry_run,
            outcome=outcome,
            detail=detail,
            duration_s=time.monotonic() - began,
        )

    def _describe_start(self, name: str) -> str:
        comp = self.estate.component(name)
        try:
            argv = " ".join(resolve_command(comp, self.estate))
        except EstateError as e:
            argv = f"(cannot: {e})"
        n = len(comp.effective_probes)
        wait = f"then wait up to {comp.start_timeout_s:g} s for its {n} probes"
        return f"{name}: {argv} in {self.estate.path(comp.workdir)}, {wait}"

    def _why_down(self, component: str) -> str:
        record = read_record(self.state_dir, component)
        if record.pid is None:
            return "never started" if record.started_at is None else "stopped"
        code = exit_code(record)
        return f"pid {record.pid} exited" + (f" with code {code}" if code is not None else "")

    def _log_tail(self, component: str) -> str:
        comp = self.estate.component(component)
        if not comp.logs:
            return ""
        record = read_record(self.state_dir, component)
        tail = files.tail_lines(self.estate.path(comp.logs[0]), _LOG_TAIL_ON_FAILURE, record.log_offset)
        return (
            f"\nlog tail ({comp.logs[0]}):\n" + "\n".join(tail)
            if tail
            else f"\n(no output in {comp.logs[0]})"
        )
