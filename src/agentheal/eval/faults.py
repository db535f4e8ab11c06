"""Real faults for a running estate, each undone by nothing but healing.

Every fault acts on real processes and files: it kills a process, writes a bad config and
restarts, fills a data folder or a log, makes a service hold memory, kills a dependency,
deploys a broken release, switches a slow feature flag on, poisons a work queue, or leaves a
stale lock behind. `FAULTS` holds one of each by name; `get_fault(name)` finds one, and
`fault.inject(backend, component)` returns a `FaultRecord` (what it did, where it shows, the
expected heal). The CLI is `agentheal fault list` and `agentheal fault inject`.

Some faults use what the shopfront sample estate's services offer: `memory_leak` posts to the
service's `/admin/leak` endpoint, `latency_regression` switches the `recompute_prices` flag and
`queue_stalled` writes orders in the shopfront worker's format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

from agentheal.estate import changes
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import Estate
from agentheal.eval.fault_model import (
    ExpectedHeal,
    Fault,
    FaultError,
    FaultRecord,
    is_down,
    kill,
    relaunch,
    running_pid,
    wait_broken,
    wait_until,
)

__all__ = ["FAULTS", "ExpectedHeal", "Fault", "FaultError", "FaultRecord", "get_fault", "wait_broken"]

_MB = 1024 * 1024
_CONFLICT = "\n<<<<<<< HEAD\n# edited on the host\n=======\n# edited in the repository\n>>>>>>> origin/main\n"


def _http_probe(estate: Estate, component: str) -> str | None:
    return next((p.http for p in estate.component(component).effective_probes if p.http), None)


class ProcessKilled(Fault):
    name = "process_killed"
    description = "SIGKILL the component's main process, as the OOM killer or a stray kill -9 would."

    def _applies(self, estate: Estate, component: str) -> bool:
        return True

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        did = [kill(backend, component)]
        stale = [
            s.path
            for lock in backend.estate.component(component).locks
            if (s := changes.inspect_lock(backend.estate, lock)).verdict == "stale"
        ]
        if stale:
            did.append(f"its lock file stays behind: {', '.join(stale)}")
        actions = [f"remove_stale_lock({component})"] if stale else []
        return self._record(
            backend,
            component,
            did,
            f"{component} is down: connection refused",
            ["process_down", *(["stale_lock"] if stale else [])],
            "availability",
            [*actions, f"restart({component})"],
        )


class CrashLoop(Fault):
    name = "crash_loop"
    description = (
        "Write a merge conflict into the component's config file and restart it: it dies at every start."
    )
    needs = "a config file (configs:)"

    def _applies(self, estate: Estate, component: str) -> bool:
        return bool(estate.component(component).configs)

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        estate = backend.estate
        running_pid(backend, component)
        config = estate.component(component).configs[0]
        with estate.path(config).open("a", encoding="utf-8") as fh:
            fh.write(_CONFLICT)
        did = [f"appended an unresolved merge conflict to {config}"]
        done, _record = relaunch(backend, component)
        did.append(done)
        timeout = estate.component(component).start_timeout_s
        if not wait_until(lambda: is_down(backend, component), timeout):
            raise FaultError(
                f"{component} still runs {timeout:g} s after the bad config; it ignores {config}"
            )
        did.append(f"{component} exited at start")
        return self._record(
            backend,
            component,
            did,
            f"{component} keeps crashing right after start since its settings file was edited",
            ["config_changed", "crash_loop", "process_down"],
            "configuration",
            [f"restore_config({component})", f"restart({component})"],
        )


class DataOverBudget(Fault):
    name = "data_over_budget"
    description = (
        "Fill a data folder that has a budget past it with leftover files, as a runaway cache would."
    )
    needs = "a data folder with budget_mb"

    def _applies(self, estate: Estate, component: str) -> bool:
        return any(d.budget_mb for d in estate.component(component).data_dirs)

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        from agentheal.estate.files import folder_size

        data = next(d for d in backend.estate.component(component).data_dirs if d.budget_mb)
        assert data.budget_mb is not None
        folder = backend.estate.path(data.path)
        folder.mkdir(parents=True, exist_ok=True)
        need = int(data.budget_mb * 1.25 * _MB) - folder_size(folder) + 1
        chunk = b"\0" * (256 * 1024)
        written = 0
        while written < need:
            (folder / f"orphan-{uuid.uuid4().hex[:10]}.part").write_bytes(chunk)
            written += len(chunk)
        return self._record(
            backend,
            component,
            [
                f"wrote {written / _MB:.1f} MB of leftover files into {data.path} "
                f"({data.budget_mb:g} MB allowed)"
            ],
            f"{component}: the data folder {data.path} is filling up the disk",
            ["disk_over_budget"],
            "capacity",
            [f"clean_dir({component})"],
        )


class LogOverBudget(Fault):
    name = "log_over_budget"
    description = "Append debug lines to the component's log until it is past its log budget (a log storm)."
    needs = "a log file and log_budget_mb"

    def _applies(self, estate: Estate, component: str) -> bool:
        comp = estate.component(component)
        return bool(comp.logs) and comp.log_budget_mb is not None

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        comp = backend.estate.component(component)
        assert comp.log_budget_mb is not None
        log = backend.estate.path(comp.logs[0])
        log.parent.mkdir(parents=True, exist_ok=True)
        size = log.stat().st_size if log.exists() else 0
        need = int(comp.log_budget_mb * 1.25 * _MB) - size + 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        lines = "".join(
            f"{stamp}.000 DEBUG {component}: cache lookup key=product:SKU-{i % 50 + 1:04d} hit=false ttl=30\n"
            for i in range(2000)
        ).encode()
        with log.open("ab") as fh:
            written = 0
            while written < need:
                fh.write(lines)
                written += len(lines)
        return self._record(
            backend,
            component,
            [
                f"appended {written / _MB:.1f} MB of DEBUG lines to {comp.logs[0]} "
                f"({comp.log_budget_mb:g} MB allowed)"
            ],
            f"{component}'s log file is growing fast and filling the disk",
            ["logs_large"],
            "capacity",
            [f"rotate_logs({component})"],
        )


class MemoryLeak(Fault):
    name = "memory_leak"
    description = "Make the service allocate and hold memory past its budget (POST /admin/leak)."
    needs = "memory_budget_mb and an HTTP probe on a service with /admin/leak (the shopfront services)"

    def _applies(self, estate: Estate, component: str) -> bool:
        return (
            estate.component(component).memory_budget_mb is not None
            and _http_probe(estate, component) is not None
        )

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        import httpx

        running_pid(backend, component)
        budget = backend.estate.component(component).memory_budget_mb
        probe = _http_probe(backend.estate, component)
        assert budget is not None and probe is not None
        parts = urlsplit(probe)
        mb = int(budget) + 40
        url = f"{parts.scheme}://{parts.netloc}/admin/leak?mb={mb}"
        try:
            answer = httpx.post(url, timeout=10, trust_env=False)
        except httpx.HTTPError as e:
            raise FaultError(f"{component}: POST {url} failed: {e}") from None
        if answer.status_code != 200:
            raise FaultError(
                f"{component}: POST {url} answered {answer.status_code}: it has no leak endpoint"
            )
        return self._record(
            backend,
            component,
            [f"POST {url}: {component} now holds {mb} MB more (budget {budget:g} MB)"],
            f"{component} memory keeps growing, far over its budget",
            ["memory_high"],
            "capacity",
            [f"restart({component})"],
        )


class DependencyDown(Fault):
    name = "dependency_down"
    description = (
        "Kill a component others depend on; its dependents answer errors (heal the dependency, not them)."
    )
    needs = "components that depend on it (depends_on)"

    def _applies(self, estate: Estate, component: str) -> bool:
        return bool(estate.dependents(component))

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        did = [kill(backend, component)]
        dependents = backend.estate.dependents(component)
        failing: list[str] = []

        def reported() -> bool:
            failing[:] = [d for d in dependents if not backend.health(d).healthy]
            return bool(failing)

        wait_until(reported, 5.0, step_s=0.1)
        shows = failing[0] if failing else dependents[0]
        did.append(f"{', '.join(failing) or 'no dependent'} now fail(s) their probes")
        return self._record(
            backend,
            component,
            did,
            f"{shows} answers errors: its calls to {component} fail",
            ["dependency_down", "probe_failed"],
            "dependencies",
            [f"restart({component})"],
            gap_component=shows,
        )


class BadRelease(Fault):
    name = "bad_release"
    description = "Switch the component's current release to a broken one (answers 500) and restart it."
    needs = "releases (releases: {dir, current}) with a release other than the current one"

    def _applies(self, estate: Estate, component: str) -> bool:
        if estate.component(component).releases is None:
            return False
        return bool(
            set(changes.release_names(estate, component)) - {changes.current_release(estate, component)}
        )

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        estate = backend.estate
        running_pid(backend, component)
        current = changes.current_release(estate, component)
        others = [r for r in changes.release_names(estate, component) if r != current]
        broken = next((r for r in reversed(others) if "bad" in r), others[-1])
        changes.switch_release(estate, component, broken)
        did = [f"deployed {broken}: switched {component}'s current release from {current} to {broken}"]
        did.append(relaunch(backend, component)[0])
        return self._record(
            backend,
            component,
            did,
            f"{component} answers 500 errors since {broken} was deployed",
            ["bad_release", "probe_failed"],
            "releases",
            [f"rollback_release({component})", f"restart({component})"],
        )


class LatencyRegression(Fault):
    name = "latency_regression"
    description = "Switch a slow feature flag on (recompute_prices): every request pays for it."
    needs = "a flags file with the recompute_prices flag, and an HTTP probe with latency_budget_ms"
    flag = "recompute_prices"

    def _applies(self, estate: Estate, component: str) -> bool:
        comp = estate.component(component)
        if comp.flags is None or not any(p.latency_budget_ms for p in comp.effective_probes):
            return False
        try:
            return self.flag in changes.read_flags(estate.path(comp.flags))
        except ValueError:
            return False

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        comp = backend.estate.component(component)
        assert comp.flags is not None
        # Edited in place, the way a person flips a flag: not through set_flag, which heals.
        path = backend.estate.path(comp.flags)
        flags = changes.read_flags(path)
        old = flags.get(self.flag)
        flags[self.flag] = True
        path.write_text(json.dumps(flags, indent=2) + "\n", encoding="utf-8")
        budget = next(p.latency_budget_ms for p in comp.effective_probes if p.latency_budget_ms)
        return self._record(
            backend,
            component,
            [f"switched {self.flag} from {json.dumps(old)} to true in {comp.flags}"],
            f"{component} got slow: responses take longer than {budget:g} ms",
            ["slow_response", "flag_changed"],
            "performance",
            [f"set_flag({component})"],
        )


class QueueStalled(Fault):
    name = "queue_stalled"
    description = "Queue an order the consumer retries for ever (unknown SKU), then more orders behind it."
    needs = "a queue (queue: {path, stall_after_s}) consumed in the shopfront order format"

    def _applies(self, estate: Estate, component: str) -> bool:
        return estate.component(component).queue is not None

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        queue = backend.estate.component(component).queue
        assert queue is not None
        running_pid(backend, component)
        folder = backend.estate.path(queue.path)
        folder.mkdir(parents=True, exist_ok=True)
        orders = [("SKU-GONE", 1)] + [(f"SKU-{i:04d}", 1) for i in (1, 2, 3)]
        for sku, qty in orders:
            order = {"id": uuid.uuid4().hex[:12], "sku": sku, "qty": qty, "at": time.time()}
            tmp = folder / f".{order['id']}.tmp"
            tmp.write_text(json.dumps(order), encoding="utf-8")
            os.replace(tmp, folder / f"{time.time_ns()}-{order['id']}.json")
            time.sleep(0.02)  # the poison order must be the oldest, so it is claimed first
        return self._record(
            backend,
            component,
            [
                f"queued an order for SKU-GONE (unknown to inventory), then {len(orders) - 1} more, "
                f"in {queue.path}"
            ],
            f"orders are not being processed: the {component} queue keeps growing",
            ["queue_stalled", "probe_failed"],
            "availability",
            [f"restart({component})"],
        )


class StaleLock(Fault):
    name = "stale_lock"
    description = "Stop the component and leave its lock file naming a dead process: the next start refuses."
    needs = "a lock file (locks:)"

    def _applies(self, estate: Estate, component: str) -> bool:
        return bool(estate.component(component).locks)

    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        from agentheal.estate.process import stop_process

        estate = backend.estate
        lock = estate.component(component).locks[0]
        did = [f"stopped {component} ({stop_process(backend.state_dir, component)})"]
        # A pid that surely belonged to a process and is surely gone: one we started and reaped.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        path = estate.path(lock)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{dead.pid}\n", encoding="utf-8")
        did.append(f"left {lock} naming pid {dead.pid}, a maintenance job that has exited")
        did.append(relaunch(backend, component)[0])
        timeout = estate.component(component).start_timeout_s
        if wait_until(lambda: is_down(backend, component), timeout):
            did.append(f"{component} refused to start")
        return self._record(
            backend,
            component,
            did,
            f"{component} will not start: it says another instance holds its lock",
            ["stale_lock", "process_down"],
            "availability",
            [f"remove_stale_lock({component})", f"restart({component})"],
        )


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        ProcessKilled(),
        CrashLoop(),
        DataOverBudget(),
        LogOverBudget(),
        MemoryLeak(),
        DependencyDown(),
        BadRelease(),
        LatencyRegression(),
        QueueStalled(),
        StaleLock(),
    )
}


def get_fault(name: str) -> Fault:
    """The fault called `name` (FaultError naming the known ones otherwise)."""
    try:
        return FAULTS[name]
    except KeyError:
        raise FaultError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})") from None
