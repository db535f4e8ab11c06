"""shopfront inventory, release v1: stock and prices in SQLite.

GET /stock/{sku} answers an item (`sku`, `name`, `price` in cents, `qty`); POST /reserve takes
`{"sku", "qty"}` and answers 200, 404 for an unknown SKU or 409 when the stock is short.
The database lives in the data folder and is seeded with `seed_items` items on first start.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from shopfront import Request, Response, Service

svc = Service(
    "inventory",
    __file__,
    {
        "db": (str, "data/inventory/stock.sqlite"),
        "seed_items": (int, 50),
        "seed_qty": (int, 1000),
        "busy_timeout_ms": (int, 2000),
    },
)
_db: sqlite3.Connection | None = None
_lock = threading.Lock()


def db() -> sqlite3.Connection:
    assert _db is not None, "open_db() runs before the server starts"
    return _db


def open_db() -> None:
    global _db
    path = Path(svc.config["db"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    _db.execute(f"PRAGMA busy_timeout = {int(svc.config['busy_timeout_ms'])}")
    _db.execute("PRAGMA journal_mode = WAL")
    _db.execute(
        "CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "price INTEGER NOT NULL, qty INTEGER NOT NULL)"
    )
    (count,) = _db.execute("SELECT count(*) FROM items").fetchone()
    if count == 0:
        rows = [
            (f"SKU-{i:04d}", f"item {i}", 199 + 100 * (i % 37), svc.config["seed_qty"])
            for i in range(1, svc.config["seed_items"] + 1)
        ]
        _db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
        svc.log("INFO", f"seeded {len(rows)} items into {path}")
    svc.on_stop.append(_db.close)


def item(sku: str) -> dict[str, Any] | None:
    with _lock:
        row = db().execute("SELECT sku, name, price, qty FROM items WHERE sku = ?", (sku,)).fetchone()
    return None if row is None else dict(zip(("sku", "name", "price", "qty"), row, strict=True))


@svc.route("GET", "/stock/{sku}")
def stock(request: Request) -> Response:
    found = item(request.params["sku"])
    return (200, found) if found else (404, {"error": f"unknown sku {request.params['sku']}"})


@svc.route("POST", "/reserve")
def reserve(request: Request) -> Response:
    body = request.json()
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("sku"), str)
        or not isinstance(body.get("qty"), int)
    ):
        return 400, {"error": 'expected {"sku": "SKU-0001", "qty": 1}'}
    with _lock:
        done = db().execute(
            "UPDATE items SET qty = qty - ? WHERE sku = ? AND qty >= ?",
            (body["qty"], body["sku"], body["qty"]),
        )
    if done.rowcount == 1:
        return 200, {"reserved": body["qty"], "sku": body["sku"]}
    if item(body["sku"]) is None:
        return 404, {"error": f"unknown sku {body['sku']}"}
    return 409, {"error": f"not enough {body['sku']} in stock"}


def health() -> tuple[bool, dict[str, Any]]:
    with _lock:
        (count,) = db().execute("SELECT count(*) FROM items").fetchone()
    return count > 0, {"items": count}


def _gauges() -> list[tuple[str, str, dict[str, str], float]]:
    with _lock:
        (units,) = db().execute("SELECT coalesce(sum(qty), 0) FROM items").fetchone()
    return [("shopfront_stock_units", "Units in stock over all items.", {}, float(units))]


svc.health_check = health
svc.metrics.gauges.append(_gauges)

if __name__ == "__main__":
    svc.setup()
    open_db()
    svc.serve()
