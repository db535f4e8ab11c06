"""The shopfront sample estate (real services), `materialize`, and the actions it added to the backend:
rollback_release, set_flag, scale and remove_stale_lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from agentheal.estate import changes
from agentheal.estate.actions import ActionError, validate_step
from agentheal.estate.model import EstateError, load_estate
from agentheal.estate.process import read_record
from agentheal.eval import estates, materialize
from agentheal.eval.fault_model import is_down, wait_until
from agentheal.models import Step
from shopfront_estate import Shopfront, processes_under, running_shopfront

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shopfront]:
    with running_shopfront(tmp_path_factory.mktemp("shopfront")) as running:
        yield running


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def _run(
    shop: Shopfront, action: str, component: str, dry_run: bool = False, **args: object
) -> tuple[str, str]:
    result = shop.backend.execute(Step(action=action, component=component, args=args), dry_run=dry_run)
    return result.outcome, result.detail


# -- the estate -------------------------------------------------------------------------------------------


def test_estate_comes_up_with_every_probe_passing(shop: Shopfront) -> None:
    status = shop.backend.status()
    assert [h.name for h in status] == ["inventory", "api", "worker"]
    assert all(h.healthy for h in status), [h.detail for h in status]
    for component in ("inventory", "api", "worker"):
        health = _get(shop.url(component, "/health"))
        body = health.json()
        assert health.status_code == 200 and body["status"] == "ok"
        assert body["service"] == component and body["release"] == "v1" and "check_ms" in body
        names = {f.name for f in shop.backend.facts(component)}
        assert names >= {"process_running", "probes_ok"}
        assert not names & {"memory_high", "log_errors", "stale_lock", "queue_stalled", "bad_release"}
    metrics = _get(shop.url("api", "/metrics")).text
    assert "# TYPE shopfront_http_request_duration_seconds histogram" in metrics
    assert 'shopfront_release_info{service="api",release="v1"} 1' in metrics
    assert 'shopfront_flag{service="api",flag="recompute_prices"} 0' in metrics
    assert "process_resident_memory_bytes" in _get(shop.url("worker", "/metrics")).text
    # Each reads its config, keeps data in its folder and writes its log.
    assert (shop.root / "data" / "inventory" / "stock.sqlite").is_file()
    worker_pid = read_record(shop.backend.state_dir, "worker").pid
    assert (shop.root / "data" / "worker" / "consumer.lock").read_text().strip() == str(worker_pid)
    for component in ("inventory", "api", "worker"):
        assert "release v1 listening" in (shop.root / "logs" / f"{component}.log").read_text()


def test_an_order_goes_through_api_queue_worker_and_inventory(shop: Shopfront) -> None:
    before = _get(shop.url("inventory", "/stock/SKU-0007")).json()["qty"]
    answer = httpx.post(shop.url("api", "/orders"), json={"sku": "SKU-0007", "qty": 2}, trust_env=False)
    assert answer.status_code == 202
    receipt = shop.root / "data" / "worker" / "receipts" / f"{answer.json()['order']}.json"
    deadline = time.monotonic() + 10
    while not receipt.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(receipt.read_text())["sku"] == "SKU-0007"
    assert _get(shop.url("inventory", "/stock/SKU-0007")).json()["qty"] == before - 2
    page = _get(shop.url("api", "/products/SKU-0007")).json()
    assert (
        page["price"].endswith("EUR") and (shop.root / "data" / "api" / "cache" / "SKU-0007.json").is_file()
    )


def test_a_bad_config_line_stops_the_start_and_is_named(shop: Shopfront, tmp_path: Path) -> None:
    bad = tmp_path / "api.conf"
    bad.write_text("currency = EUR\ncache_ttl_s = soon\n")
    done = subprocess.run(
        [
            sys.executable,
            "api/current/shopfront_api.py",
            "--port",
            "1",
            "--inventory",
            "http://x",
            "--config",
            str(bad),
        ],
        cwd=shop.root,
        env={**os.environ, "PYTHONPATH": "lib"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert (
        " FATAL api[" in done.stdout
        and "bad config, not starting" in done.stdout
        and "line 2: cache_ttl_s must be float, got 'soon'" in done.stdout
    )


# -- materialize ------------------------------------------------------------------------------------------


def test_materialize_uses_the_given_ports_and_name(tmp_path: Path) -> None:
    path = materialize("shopfront", tmp_path / "a", ports={"api": 45123}, estate_name="shop-a")
    estate = load_estate(path)
    assert estate.name == "shop-a"
    api, inventory = estate.component("api"), estate.component("inventory")
    assert api.port == 45123 and api.probes[0].http == "http://127.0.0.1:45123/health"
    assert inventory.port not in (None, 18711, 45123)
    assert f"http://127.0.0.1:{inventory.port}" in api.command
    assert len({c.port for c in estate.components.values()}) == 3
    assert (path.parent / "api" / "current").is_symlink() and os.readlink(
        path.parent / "api" / "current"
    ) == "releases/v1"


def test_materialize_leaves_runtime_state_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "samples"
    materialize("shopfront", source / "shopfront")
    for junk in ("logs/api.log", "data/inventory/stock.sqlite", "queue/incoming/1.json", "conf/api.conf.bad"):
        (source / "shopfront" / junk).parent.mkdir(parents=True, exist_ok=True)
        (source / "shopfront" / junk).write_text("left over\n")
    monkeypatch.setattr(estates, "estates_root", lambda: source)
    copy = materialize("shopfront", tmp_path / "copy").parent
    assert not (copy / "logs").exists() and not (copy / "data").exists() and not (copy / "queue").exists()
    assert not (copy / "conf" / "api.conf.bad").exists() and (copy / "conf" / "api.conf").is_file()


def test_materialize_refuses_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(EstateError, match=r"no sample estate 'nope' .*known: shopfront"):
        materialize("nope", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(EstateError, match="must not exist or be an empty folder"):
        materialize("shopfront", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(EstateError, match="ports given for web, which declare no port"):
        materialize("shopfront", tmp_path / "y", ports={"web": 1234})
    with pytest.raises(EstateError, match="two components on one port"):
        materialize("shopfront", tmp_path / "z", ports={"api": 40001, "worker": 40001})


# -- the actions it added ---------------------------------------------------------------------------------


def test_rollback_release_switches_back_and_keeps_a_record(shop: Shopfront) -> None:
    estate, state = shop.estate, shop.backend.state_dir
    assert changes.release_names(estate, "api") == ["v1", "v2-bad"]
    assert changes.current_release(estate, "api") == "v1" and changes.last_good_release(state, "api") == "v1"
    changes.switch_release(estate, "api", "v2-bad")  # a deploy; the running process keeps v1 until a restart
    outcome, detail = _run(shop, "rollback_release", "api", dry_run=True)
    assert outcome == "dry_run" and "v1, the last known good release" in detail
    assert changes.current_release(estate, "api") == "v2-bad"
    outcome, detail = _run(shop, "rollback_release", "api", to="v9")
    assert outcome == "failed" and "no release 'v9' (releases: v1, v2-bad)" in detail
    outcome, detail = _run(shop, "rollback_release", "api")
    assert outcome == "ok" and "from v2-bad to v1" in detail and "undo: rollback_release to=v2-bad" in detail
    assert os.readlink(shop.root / "api" / "current") == "releases/v1"
    assert changes.history(state, "api")[-1] | {"at": 0} == {
        "at": 0,
        "action": "rollback_release",
        "from": "v2-bad",
        "to": "v1",
    }
    outcome, detail = _run(shop, "rollback_release", "inventory")
    assert outcome == "failed" and "no release to roll back to from v1" in detail
    observed = shop.backend.observe("releases", "api")
    assert "current: v1" in observed and "rolled back v2-bad -> v1" in observed


def test_a_good_release_becomes_last_known_good_and_a_later_failure_is_not_blamed_on_it(
    shop: Shopfront,
) -> None:
    estate, state = shop.estate, shop.backend.state_dir
    releases = shop.root / "api" / "releases"
    shutil.copytree(releases / "v1", releases / "v1.1")
    changes.switch_release(estate, "api", "v1.1")
    assert _run(shop, "restart", "api")[0] == "ok"
    assert _get(shop.url("api", "/health")).json()["release"] == "v1.1"
    shop.backend.facts("api")  # a release served healthy after its switch is proven good
    assert changes.last_good_release(state, "api") == "v1.1"
    os.kill(read_record(state, "api").pid or 0, signal.SIGKILL)
    assert wait_until(lambda: is_down(shop.backend, "api"), 5.0)
    names = {f.name for f in shop.backend.facts("api")}
    assert "process_down" in names and "bad_release" not in names
    assert _run(shop, "rollback_release", "api", to="v1")[0] == "ok"
    assert _run(shop, "restart", "api")[0] == "ok"
    shop.backend.facts("api")
    assert changes.last_good_release(state, "api") == "v1"
    shutil.rmtree(releases / "v1.1")


def test_set_flag_is_validated_and_keeps_the_previous_value(shop: Shopfront) -> None:
    flags_file = shop.root / "conf" / "api.flags.json"
    with pytest.raises(ActionError, match=r"args.name: 'turbo' is not a flag in conf/api.flags.json"):
        _run(shop, "set_flag", "api", name="turbo", value=True)
    with pytest.raises(ActionError, match="give either value or last_good"):
        _run(shop, "set_flag", "api", name="recompute_prices")
    outcome, detail = _run(shop, "set_flag", "api", name="recompute_prices", value="yes")
    assert outcome == "failed" and "refusing to set it" in detail
    outcome, detail = _run(shop, "set_flag", "api", name="member_discount_pct", value=10, dry_run=True)
    assert outcome == "dry_run" and json.loads(flags_file.read_text())["member_discount_pct"] == 0
    outcome, detail = _run(shop, "set_flag", "api", name="member_discount_pct", value=10)
    assert outcome == "ok" and "member_discount_pct: 0 -> 10" in detail
    assert json.loads(flags_file.read_text())["member_discount_pct"] == 10
    assert changes.history(shop.backend.state_dir, "api")[-1]["before"] == 0
    fact = next(f for f in shop.backend.facts("api") if f.name == "flag_changed")
    assert fact.detail.startswith(
        "member_discount_pct is 10 in conf/api.flags.json, 0 in the last known good"
    )
    assert "changed: member_discount_pct is 10" in shop.backend.observe("read_flags", "api")
    outcome, detail = _run(shop, "set_flag", "api", name="member_discount_pct", last_good=True)
    assert outcome == "ok" and json.loads(flags_file.read_text())["member_discount_pct"] == 0
    assert "flag_changed" not in {f.name for f in shop.backend.facts("api")}


def _consumers(shop: Shopfront) -> int:
    pid = read_record(shop.backend.state_dir, "worker").pid
    assert pid is not None
    return len(psutil.Process(pid).children())


def test_scale_runs_that_many_consumers_within_the_declared_range(shop: Shopfront) -> None:
    assert _consumers(shop) == 1
    with pytest.raises(ActionError, match=r"args.replicas: 5 is outside min 1 .. max 4"):
        _run(shop, "scale", "worker", replicas=5)
    with pytest.raises(ActionError, match=r"declares no scale"):
        _run(shop, "scale", "api", replicas=2)
    outcome, detail = _run(shop, "scale", "worker", dry_run=True, replicas=3)
    assert outcome == "dry_run" and _consumers(shop) == 1
    outcome, detail = _run(shop, "scale", "worker", replicas=3)
    assert outcome == "ok" and detail.startswith("1 -> 3 worker processes"), detail
    assert _consumers(shop) == 3 and _get(shop.url("worker", "/health")).json()["consumers"] == 3
    assert _run(shop, "restart", "worker")[0] == "ok" and _consumers(shop) == 3  # the count is kept
    assert _run(shop, "scale", "worker", replicas=1)[0] == "ok" and _consumers(shop) == 1


def test_remove_stale_lock_only_when_its_owner_is_gone(shop: Shopfront) -> None:
    lock = shop.root / "data" / "worker" / "consumer.lock"
    outcome, detail = _run(shop, "remove_stale_lock", "worker", path="data/worker/consumer.lock")
    assert outcome == "failed" and "is held by pid" in detail and lock.exists()
    problems = validate_step(
        Step(action="remove_stale_lock", component="worker", args={"path": "conf/x"}), shop.estate
    )
    assert problems and "is not one of the component's lock files" in problems[0]
    assert _run(shop, "stop", "worker")[0] == "ok" and not lock.exists()  # a clean stop removes it

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")
    assert "stale_lock" in {f.name for f in shop.backend.facts("worker")}
    assert _run(shop, "remove_stale_lock", "worker", dry_run=True)[0] == "dry_run" and lock.exists()
    outcome, detail = _run(shop, "remove_stale_lock", "worker")
    assert outcome == "ok" and f"names pid {dead.pid}, which is not running" in detail and not lock.exists()
    assert (shop.backend.state_dir / "locks" / "worker-consumer.lock.removed").read_text() == f"{dead.pid}\n"

    # A live pid that started after the lock was written cannot have written it: a reused pid.
    lock.write_text(f"{os.getpid()}\n")
    started = psutil.Process().create_time()
    os.utime(lock, (started - 60, started - 60))
    outcome, detail = _run(shop, "remove_stale_lock", "worker")
    assert outcome == "ok" and "the pid was reused" in detail and not lock.exists()

    lock.write_text("locked by the backup job\n")
    outcome, detail = _run(shop, "remove_stale_lock", "worker")
    assert outcome == "failed" and "names no pid" in detail and lock.exists()
    lock.unlink()
    assert _run(shop, "start", "worker")[0] == "ok"


def test_down_leaves_no_process(shop: Shopfront) -> None:
    assert processes_under(shop.root), "the estate should be running before this test"
    results = shop.backend.down()
    assert [r.component for r in results] == ["worker", "api", "inventory"]
    assert processes_under(shop.root) == []
    for component in ("inventory", "api", "worker"):
        with pytest.raises(httpx.ConnectError):
            _get(shop.url(component, "/health"))
