"""The estate: file loading, real processes on loopback, actions, observations and facts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from agentheal.config import Settings
from agentheal.estate import (
    CATALOGUE,
    OBSERVATIONS,
    ActionError,
    Estate,
    EstateError,
    LocalBackend,
    estate_schema,
    export_schema,
    load_estate,
    tool_schemas,
    validate_step,
)
from agentheal.models import Step

REPO = Path(__file__).resolve().parent.parent


def _backend(estate_file: Path, settings: Settings) -> LocalBackend:
    estate = load_estate(estate_file)
    return LocalBackend(estate, settings.estates_dir / estate.name)


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll until the condition holds or the timeout ends; the caller asserts the result."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _fact_names(backend: LocalBackend, component: str) -> set[str]:
    return {f.name for f in backend.facts(component)}


def _write_estate(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "estate"
    root.mkdir(exist_ok=True)
    path = root / "estate.yaml"
    path.write_text(text)
    return path


# -- the estate file -------------------------------------------------------------------------------


def test_contract_file_loads_with_paths_relative_to_its_folder(tiny_estate_file: Path) -> None:
    estate = load_estate(tiny_estate_file)
    root = tiny_estate_file.parent.resolve()
    web = estate.component("web")
    assert estate.name == "tiny" and estate.root == root
    assert web.command[:3] == ["python3", "-m", "http.server"]
    assert web.probes[0].http is not None and web.probes[0].expect_status == 200
    assert estate.path(web.workdir) == root / "www"
    assert estate.path(web.logs[0]) == root / "logs" / "web.log"
    assert estate.order() == ["web"]
    assert "root" not in estate.model_dump()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\ncomponents:\n  a:\n    command: 5\n",
            "components.a.command: Input should be a valid list",
        ),
        (
            "name: x\ncomponents:\n  a:\n    command: [sleep, '1']\n    bogus_key: 1\n",
            "components.a.bogus_key",
        ),
        ("name: x\ncomponents:\n  a:\n    workdir: .\n", "components.a.command: Field required"),
        (
            "name: x\ncomponents:\n  a:\n    command: [a]\n    probes: [{http: 'http://x/', tcp: 'h:1'}]\n",
            "components.a.probes.0: a probe needs exactly one of http, tcp, command",
        ),
        (
            "name: x\ncomponents:\n  a:\n    command: [a]\n    probes: [{tcp: nohost}]\n",
            "components.a.probes.0.tcp",
        ),
        (
            "name: x\ncomponents:\n  a:\n    command: [a]\n    depends_on: [nosuch]\n",
            "a depends on unknown component 'nosuch'",
        ),
        (
            "name: x\ncomponents:\n  a: {command: [a], depends_on: [b]}\n"
            "  b: {command: [b], depends_on: [a]}\n",
            "dependency cycle: a -> b -> a",
        ),
        ("name: x\ncomponents:\n  a:\n    command: [a, b]]\n    workdir: .\n", "YAML syntax error at line 4"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("name: x\nroot: /etc\ncomponents:\n  a: {command: [a]}\n", "root: not allowed"),
    ],
)
def test_broken_estate_files_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write_estate(tmp_path, text)
    with pytest.raises(EstateError) as err:
        load_estate(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_missing_estate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EstateError, match=r"none\.yaml: estate file not found"):
        load_estate(tmp_path / "none.yaml")


def test_published_schema_is_current(tmp_path: Path) -> None:
    export_schema(tmp_path / "schema.json")
    fresh = json.loads((tmp_path / "schema.json").read_text())
    assert fresh == estate_schema()
    assert "root" not in json.dumps(fresh["properties"])
    for published in (REPO / "estate.schema.json", REPO / "src" / "agentheal" / "estate" / "schema.json"):
        assert json.loads(published.read_text()) == fresh, f"{published} is stale: run export_schema"


# -- processes -------------------------------------------------------------------------------------


def test_up_kill_restart_down(tiny_estate_file: Path, settings: Settings) -> None:
    backend = _backend(tiny_estate_file, settings)
    results = backend.up()
    assert [(r.component, r.outcome) for r in results] == [("web", "ok")], results
    health = backend.health("web")
    assert health.healthy and health.running and health.pid
    dumped = health.model_dump(mode="json")
    assert {"name", "healthy", "pid", "running", "probes", "detail"} <= dumped.keys()
    assert (tiny_estate_file.parent / "logs" / "web.log").is_file()  # the log folder was created

    first = health.pid
    os.kill(first, signal.SIGKILL)  # the process is our child: it becomes a zombie until reaped
    assert _until(lambda: not backend.health("web").running)
    down = backend.health("web")
    assert not down.healthy and down.pid is None and "exited" in down.detail
    assert {"process_down", "probe_failed"} <= _fact_names(backend, "web")
    assert "crash_loop" not in _fact_names(backend, "web")  # killed from outside is not a crash

    restarted = backend.execute(Step(action="restart", component="web"))
    assert restarted.outcome == "ok" and restarted.duration_s > 0, restarted
    assert backend.health("web").healthy and backend.health("web").pid != first
    assert {"process_running", "probes_ok"} <= _fact_names(backend, "web")

    second = backend.health("web").pid
    assert second is not None
    assert [r.outcome for r in backend.down()] == ["ok"]
    assert _gone(second)
    assert not backend.health("web").running


def test_a_fresh_backend_on_the_same_state_finds_and_stops_the_processes(
    tiny_estate_api_file: Path, settings: Settings
) -> None:
    first = _backend(tiny_estate_api_file, settings)
    assert [(r.component, r.outcome) for r in first.up()] == [("web", "ok"), ("api", "ok")]
    pids = {h.name: h.pid for h in first.status()}

    second = _backend(tiny_estate_api_file, settings)
    assert {h.name: (h.healthy, h.pid) for h in second.status()} == {n: (True, p) for n, p in pids.items()}
    second.down()
    assert all(_gone(p) for p in pids.values() if p)
    assert not any(h.running for h in first.status())


def test_processes_started_by_another_python_process_are_found_stopped_and_restarted(
    tiny_estate_file: Path, settings: Settings
) -> None:
    state_dir = settings.estates_dir / "tiny"
    script = (
        "import sys; from pathlib import Path; from agentheal.estate import LocalBackend, load_estate; "
        "r = LocalBackend(load_estate(sys.argv[1]), Path(sys.argv[2])).up(); "
        "sys.exit(0 if all(x.outcome == 'ok' for x in r) else 1)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_estate_file), str(state_dir)], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    backend = _backend(tiny_estate_file, settings)
    health = backend.health("web")
    assert health.healthy and health.pid, health  # its starter has exited; it keeps running

    os.kill(health.pid, signal.SIGKILL)  # not our child: whoever adopted it reaps it
    assert _until(lambda: not backend.health("web").running)
    assert backend.execute(Step(action="restart", component="web")).outcome == "ok"
    pid = backend.health("web").pid
    assert pid is not None
    backend.down()
    assert _gone(pid)


def test_up_starts_in_dependency_order_and_reports_dependency_down(
    tiny_estate_api_file: Path, settings: Settings
) -> None:
    backend = _backend(tiny_estate_api_file, settings)
    assert backend.estate.order() == ["web", "api"]
    assert [r.outcome for r in backend.up()] == ["ok", "ok"]
    assert backend.execute(Step(action="stop", component="web")).outcome == "ok"

    assert not backend.health("api").healthy and backend.health("api").running
    facts = backend.facts("api")
    dependency = [f for f in facts if f.name == "dependency_down"]
    assert len(dependency) == 1 and dependency[0].component == "web", facts
    assert "web: " in backend.observe("dependencies", "api") and "UNHEALTHY" in backend.observe(
        "dependencies", "api"
    )

    assert backend.execute(Step(action="start", component="web")).outcome == "ok"
    assert backend.health("api").healthy
    assert "dependency_down" not in _fact_names(backend, "api")


def test_start_failure_reports_exit_and_log_tail_and_facts_show_a_crash(
    tmp_path: Path, settings: Settings
) -> None:
    path = _write_estate(
        tmp_path,
        "name: crashy\ncomponents:\n  job:\n"
        "    command: [python3, -c, \"raise RuntimeError('boom at start')\"]\n"
        "    logs: [logs/job.log]\n    port: 1\n",
    )
    backend = _backend(path, settings)
    result = backend.up()[0]
    assert result.outcome == "failed"
    assert "exited with code 1" in result.detail and "boom at start" in result.detail
    names = _fact_names(backend, "job")
    assert {"process_down", "log_errors", "crash_loop", "probe_failed"} <= names


def test_budget_facts_slow_response_logs_large_memory_high_disk(tmp_path: Path, settings: Settings) -> None:
    port = _port()
    root = tmp_path / "estate"
    (root / "data").mkdir(parents=True)
    (root / "data" / "blob").write_bytes(b"x" * 4096)
    path = _write_estate(
        tmp_path,
        f"name: budgets\ncomponents:\n  web:\n"
        f"    command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1]\n"
        f"    probes: [{{http: 'http://127.0.0.1:{port}/', latency_budget_ms: 0.001}}]\n"
        f"    logs: [logs/web.log]\n    log_budget_mb: 0.00001\n    memory_budget_mb: 1\n"
        f"    data: [{{path: data, budget_mb: 0.001}}]\n",
    )
    backend = _backend(path, settings)
    try:
        assert backend.up()[0].outcome == "ok"
        backend.health("web")  # one more request, so the log has lines
        facts = {f.name: f.detail for f in backend.facts("web")}
        assert "over its 0.001 ms budget" in facts["slow_response"]
        assert "logs/web.log" in facts["logs_large"]
        assert "over its 1 MB budget" in facts["memory_high"]
        assert "data holds" in facts["disk_over_budget"]
        assert backend.health("web").healthy  # slow is a fact, not a failed probe
    finally:
        backend.down()


# -- files -----------------------------------------------------------------------------------------


def test_restore_config_puts_back_the_last_known_good_copy(
    tiny_estate_file: Path, settings: Settings
) -> None:
    backend = _backend(tiny_estate_file, settings)
    assert backend.up()[0].outcome == "ok"  # up snapshots the configs of what came up healthy
    config = tiny_estate_file.parent / "conf" / "web.conf"
    config.write_text("greeting = \x00broken\n")
    facts = {f.name: f.detail for f in backend.facts("web")}
    assert "conf/web.conf differs" in facts["config_changed"] and "broken" in facts["config_changed"]

    dry = backend.execute(Step(action="restore_config", component="web"), dry_run=True)
    assert dry.outcome == "dry_run" and "would restore" in dry.detail
    assert "broken" in config.read_text()

    result = backend.execute(Step(action="restore_config", component="web", args={"path": "conf/web.conf"}))
    assert result.outcome == "ok", result
    assert config.read_text() == "greeting = hello\n"
    assert "broken" in config.with_name("web.conf.bad").read_text()
    assert "config_changed" not in _fact_names(backend, "web")

    config.unlink()
    assert "config_missing" in _fact_names(backend, "web")
    assert backend.execute(Step(action="restore_config", component="web")).outcome == "ok"
    assert config.read_text() == "greeting = hello\n"
    backend.down()


def test_missing_config_is_a_fact_not_a_load_error(tiny_estate_file: Path, settings: Settings) -> None:
    (tiny_estate_file.parent / "conf" / "web.conf").unlink()
    backend = _backend(tiny_estate_file, settings)
    facts = {f.name: f.detail for f in backend.facts("web")}
    assert "conf/web.conf does not exist" in facts["config_missing"]
    result = backend.execute(Step(action="restore_config", component="web"))
    assert result.outcome == "failed" and "no last known good copy" in result.detail


def test_rotate_logs_keeps_generations_and_the_process_keeps_writing(
    tiny_estate_file: Path, settings: Settings
) -> None:
    backend = _backend(tiny_estate_file, settings)
    assert backend.up()[0].outcome == "ok"
    log = tiny_estate_file.parent / "logs" / "web.log"
    sizes = []
    for _ in range(4):
        backend.health("web")  # a request: http.server logs a line
        assert _until(lambda: log.stat().st_size > 0)
        sizes.append(log.stat().st_size)
        result = backend.execute(Step(action="rotate_logs", component="web", args={"keep": 3}))
        assert result.outcome == "ok" and "rotated" in result.detail
        assert log.stat().st_size == 0
    assert [log.with_name(f"web.log.{n}").is_file() for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert "GET /" in log.with_name("web.log.1").read_text()
    backend.health("web")
    assert _until(lambda: "GET /" in log.read_text())  # the running process writes to the emptied file
    assert "GET /" in backend.observe("tail_logs", "web", lines=5)
    backend.down()


def _clean_estate(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "estate"
    (root / "data" / "tmp").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "data" / "tmp" / "a.bin").write_bytes(b"a" * 1000)
    (root / "data" / "tmp" / "b.bin").write_bytes(b"b" * 500)
    (root / "logs" / "job.log").write_text("current\n")
    (root / "logs" / "job.log.1").write_text("old\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me\n")
    (root / "data" / "escape").symlink_to(outside)
    path = _write_estate(
        tmp_path,
        "name: clean\ncomponents:\n  job:\n    command: [sleep, '60']\n"
        "    logs: [logs/job.log]\n    data: [data]\n",
    )
    return path, outside


def test_clean_dir_stays_inside_declared_folders(tmp_path: Path, settings: Settings) -> None:
    path, outside = _clean_estate(tmp_path)
    backend = _backend(path, settings)
    estate = backend.estate
    for bad in (str(outside), "data/escape", "data/../..", ".", "www"):
        problems = validate_step(Step(action="clean_dir", component="job", args={"path": bad}), estate)
        assert problems and "clean_dir on job" in problems[0], bad
        with pytest.raises(ActionError):
            backend.execute(Step(action="clean_dir", component="job", args={"path": bad}))
    assert (outside / "precious.txt").is_file()

    dry = backend.execute(Step(action="clean_dir", component="job", args={"path": "data"}), dry_run=True)
    assert dry.outcome == "dry_run" and "would delete 3 files" in dry.detail
    assert (tmp_path / "estate" / "data" / "tmp" / "a.bin").is_file()

    done = backend.execute(Step(action="clean_dir", component="job", args={"path": "data"}))
    assert done.outcome == "ok" and "deleted 3 files" in done.detail and "KB freed" in done.detail
    assert not (tmp_path / "estate" / "data" / "tmp" / "a.bin").exists()
    assert (outside / "precious.txt").read_text() == "keep me\n"  # the symlink went, not its target

    logs = backend.execute(Step(action="clean_dir", component="job", args={"path": "logs"}))
    assert "deleted 1 files" in logs.detail
    assert (tmp_path / "estate" / "logs" / "job.log").is_file()  # the current log is kept


def test_dry_run_changes_nothing(tiny_estate_file: Path, settings: Settings) -> None:
    backend = _backend(tiny_estate_file, settings)
    assert backend.up()[0].outcome == "ok"
    pid = backend.health("web").pid
    log = tiny_estate_file.parent / "logs" / "web.log"
    before = log.read_bytes()
    for action in ("restart", "stop", "rotate_logs", "restore_config", "start"):
        result = backend.execute(Step(action=action, component="web"), dry_run=True)
        assert result.dry_run and result.outcome in ("dry_run", "skipped", "ok"), result
    assert backend.health("web").pid == pid and backend.health("web").healthy
    assert log.read_bytes()[: len(before)] == before
    assert not log.with_name("web.log.1").exists()
    backend.down()
    assert backend.execute(Step(action="start", component="web"), dry_run=True).outcome == "dry_run"
    assert not backend.health("web").running


# -- validation and observation ------------------------------------------------------------------


def test_validate_step_lists_problems(tiny_estate_file: Path) -> None:
    estate = load_estate(tiny_estate_file)

    def problems(action: str, component: str = "web", **args: object) -> str:
        return " | ".join(validate_step(Step(action=action, component=component, args=args), estate))

    assert problems("restart") == ""
    assert "unknown action 'reboot'" in problems("reboot")
    assert "unknown component 'db'" in problems("restart", "db")
    assert "args.lines: Input should be less than or equal to 500" in problems("tail_logs", lines=1000)
    assert "args.force: Extra inputs are not permitted" in problems("restart", force=True)
    assert "not one of the component's config files" in problems("restore_config", path="/etc/passwd")
    assert "not one of the component's log files" in problems("rotate_logs", path="../x.log")
    assert "args.path: Field required" in problems("clean_dir")


def test_observations(tiny_estate_file: Path, settings: Settings) -> None:
    backend = _backend(tiny_estate_file, settings)
    assert "not running" in backend.observe("process_stats", "web")
    assert backend.up()[0].outcome == "ok"
    stats = backend.observe("process_stats", "web")
    for word in ("pid:", "status:", "rss:", "cpu:", "open files:", "threads:", "uptime:"):
        assert word in stats
    assert "status 200" in backend.observe("probe", "web")
    assert "greeting = hello" in backend.observe("read_config", "web")
    assert "depends on nothing" in backend.observe("dependencies", "web")
    with pytest.raises(ActionError, match="not a read-only observation"):
        backend.observe("restart", "web")
    with pytest.raises(ActionError, match="less than or equal to 500"):
        backend.observe("tail_logs", "web", lines=501)
    assert backend.execute(Step(action="probe", component="web")).detail.startswith("http ")
    backend.down()


def test_log_errors_fact_counts_lines_since_the_last_start(
    tiny_estate_file: Path, settings: Settings
) -> None:
    backend = _backend(tiny_estate_file, settings)
    log = tiny_estate_file.parent / "logs" / "web.log"
    log.parent.mkdir()
    log.write_text("ERROR from an earlier run\n")
    assert backend.up()[0].outcome == "ok"
    assert "log_errors" not in _fact_names(backend, "web")
    with log.open("a") as f:
        f.write("Traceback (most recent call last):\nValueError: bad\n")
    facts = {f.name: f.detail for f in backend.facts("web")}
    assert "Traceback" in facts["log_errors"]
    backend.down()


def test_tool_schemas_offer_the_observations_only(tiny_estate_api_file: Path) -> None:
    estate: Estate = load_estate(tiny_estate_api_file)
    tools = tool_schemas(estate)
    assert [t["function"]["name"] for t in tools] == OBSERVATIONS
    params = next(t for t in tools if t["function"]["name"] == "tail_logs")["function"]["parameters"]
    assert params["properties"]["component"]["enum"] == ["api", "web"]
    assert params["required"] == ["component"] and params["properties"]["lines"]["maximum"] == 500
    assert {s.risk.value for s in CATALOGUE.values() if s.read_only} == {"none"}
    assert CATALOGUE["stop"].risk.value == "high" and CATALOGUE["restore_config"].risk.value == "medium"


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
