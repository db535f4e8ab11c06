"""shopfront worker, release v1: consumes the order queue the api fills.

The main process holds the consumer lock, serves /health and /metrics, and starts
`AGENTHEAL_REPLICAS` consumer processes (1 when unset; the `scale` action sets it). A consumer
claims the oldest order by renaming it from the queue folder into the processing folder (a
rename is atomic, so two consumers never take the same order), reserves the stock at inventory
and writes a receipt. Known weaknesses, kept on purpose because the eval's faults use them:

- an order inventory refuses (unknown SKU, short stock) is retried for ever, so one bad order
  stalls its consumer while the queue grows behind it;
- the lock file is removed only on a clean stop; a start that finds one refuses to run.

An order left in the processing folder by a consumer that died is moved to the failed folder
at the next start (at most once: a person decides what to do with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shopfront import Service, UpstreamError, call_json

svc = Service(
    "worker",
    __file__,
    {
        "queue_dir": (str, "queue/incoming"),
        "processing_dir": (str, "queue/processing"),
        "failed_dir": (str, "queue/failed"),
        "receipts_dir": (str, "data/worker/receipts"),
        "lock_file": (str, "data/worker/consumer.lock"),
        "poll_s": (float, 0.1),
        "retry_s": (float, 0.5),
        "stall_after_s": (float, 3.0),
        "inventory_timeout_s": (float, 1.0),
    },
)
svc.parser.add_argument("--inventory", required=True, help="Base URL of the inventory service.")
svc.parser.add_argument("--consumer", type=int, default=None, help="(internal) run as consumer N")
_consumers: list[subprocess.Popen[bytes]] = []
_stalled = False


def _jobs(folder: str) -> list[Path]:
    try:
        return sorted(p for p in Path(folder).iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return []


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# -- consumer processes -------------------------------------------------------------------------


def _claim(processing: Path) -> Path | None:
    for job in _jobs(svc.config["queue_dir"]):
        target = processing / job.name
        try:
            os.rename(job, target)
        except FileNotFoundError:
            continue  # another consumer took it first
        os.utime(target)  # its age in processing counts from the claim
        return target
    return None


def _handle(job: Path, parent: int) -> None:
    order: dict[str, Any] = json.loads(job.read_text(encoding="utf-8"))
    url = svc.args.inventory.rstrip("/") + "/reserve"
    body = {"sku": order.get("sku"), "qty": order.get("qty")}
    while os.getppid() == parent:
        try:
            status, answer = call_json(url, body, svc.config["inventory_timeout_s"])
        except UpstreamError as exc:
            status, answer = 0, {"error": str(exc)}
        if status == 200:
            receipts = Path(svc.config["receipts_dir"])
            receipts.mkdir(parents=True, exist_ok=True)
            receipt = {**order, "reserved_at": time.time(), "consumer": os.getpid()}
            (receipts / f"{order['id']}.json").write_text(json.dumps(receipt), encoding="utf-8")
            job.unlink()
            svc.log("INFO", f"order {order['id']}: reserved {order['qty']} x {order['sku']}")
            return
        # v1 retries every refusal: an order that can never succeed blocks this consumer.
        svc.log("WARNING", f"order {order.get('id')}: inventory answered {status} {answer}; retrying")
        time.sleep(svc.config["retry_s"])


def consume(number: int) -> None:
    """Claim and handle orders until the main process goes away."""
    parent = os.getppid()
    processing = Path(svc.config["processing_dir"])
    processing.mkdir(parents=True, exist_ok=True)
    svc.log("INFO", f"consumer {number} started")
    while os.getppid() == parent:  # orphaned (the main process died): stop consuming
        job = _claim(processing)
        if job is None:
            time.sleep(svc.config["poll_s"])
            continue
        try:
            _handle(job, parent)
        except (OSError, ValueError, KeyError) as exc:
            svc.log("ERROR", f"order {job.name} is unreadable ({exc}); moved to the failed folder")
            _move(job, Path(svc.config["failed_dir"]))


def _move(job: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # another consumer moved it
        os.rename(job, folder / job.name)


# -- main process -------------------------------------------------------------------------------


def take_lock() -> None:
    lock = Path(svc.config["lock_file"])
    if lock.exists():
        holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        svc.log(
            "ERROR",
            f"consumer lock {lock} exists (pid {holder}): another worker may be consuming; not starting",
        )
        sys.exit(1)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{os.getpid()}\n", encoding="utf-8")
    svc.on_stop.append(stop_consumers)
    svc.on_stop.append(lambda: lock.unlink(missing_ok=True))


def recover() -> None:
    for job in _jobs(svc.config["processing_dir"]):
        svc.log("WARNING", f"order {job.name} was interrupted in processing; moved to the failed folder")
        _move(job, Path(svc.config["failed_dir"]))


def start_consumers() -> None:
    replicas = int(os.environ.get("AGENTHEAL_REPLICAS", "1"))
    for number in range(1, replicas + 1):
        argv = [sys.executable, sys.argv[0], *sys.argv[1:], "--consumer", str(number)]
        _consumers.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
    svc.log("INFO", f"{replicas} consumer(s) started")


def stop_consumers() -> None:
    for proc in _consumers:
        if proc.poll() is None:
            proc.terminate()
    for proc in _consumers:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()


def _last_progress() -> float:
    """When an order was last finished (a receipt or a failed order written), or this process started."""
    stamps = [svc.started]
    for folder in (svc.config["receipts_dir"], svc.config["failed_dir"]):
        try:
            stamps.append(Path(folder).stat().st_mtime)  # a folder's time changes when a file is added
        except OSError:
            continue
    return max(stamps)


def health() -> tuple[bool, dict[str, Any]]:
    global _stalled
    waiting = _jobs(svc.config["queue_dir"])
    working = _jobs(svc.config["processing_dir"])
    oldest = max((_age(p) for p in waiting + working), default=0.0)
    dead = [
        f"consumer {i} exited with {p.returncode}"
        for i, p in enumerate(_consumers, 1)
        if p.poll() is not None
    ]
    # Stalled: an order waits too long and none was finished for as long. A backlog that drains is not.
    idle = time.time() - _last_progress()
    stalled = oldest > svc.config["stall_after_s"] and idle > svc.config["stall_after_s"]
    if stalled and not _stalled:
        svc.log("ERROR", f"queue stalled: the oldest order waits {oldest:.1f} s, {len(waiting)} waiting")
    _stalled = stalled
    detail = {
        "waiting": len(waiting),
        "processing": len(working),
        "oldest_s": round(oldest, 1),
        "idle_s": round(idle, 1),
    }
    if dead:
        detail["dead"] = dead
    return not stalled and not dead, {**detail, "consumers": len(_consumers)}


def _gauges() -> list[tuple[str, str, dict[str, str], float]]:
    waiting = _jobs(svc.config["queue_dir"])
    working = _jobs(svc.config["processing_dir"])
    oldest = max((_age(p) for p in waiting + working), default=0.0)
    return [
        ("shopfront_queue_depth", "Orders waiting in the queue.", {}, float(len(waiting))),
        ("shopfront_queue_processing", "Orders claimed by a consumer, not done.", {}, float(len(working))),
        ("shopfront_queue_oldest_seconds", "Age of the oldest order not done.", {}, oldest),
        (
            "shopfront_queue_failed",
            "Orders in the failed folder.",
            {},
            float(len(_jobs(svc.config["failed_dir"]))),
        ),
        ("shopfront_worker_consumers", "Consumer processes started.", {}, float(len(_consumers))),
    ]


svc.health_check = health
svc.metrics.gauges.append(_gauges)

if __name__ == "__main__":
    svc.setup()
    if svc.args.consumer is not None:
        consume(svc.args.consumer)
    else:
        take_lock()
        recover()
        start_consumers()
        svc.serve()
