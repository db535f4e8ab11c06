"""shopfront api, release v2: v1 plus member discounts on product pages.

This release is broken on purpose (the eval's bad-release fault deploys it): pricing reads
`price_cents`, a field inventory does not send, so every priced page and /health answer 500
with a KeyError traceback in the log. Rolling back to v1 heals it.

GET /products/{sku} prices an item from inventory (cached in the cache folder); POST /orders
checks the stock and puts the order on the queue the worker consumes. /health asks inventory
for a sample item and prices it, so it fails when inventory does and when pricing is broken.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from shopfront import Request, Response, Service, call_json

svc = Service(
    "api",
    __file__,
    {
        "inventory_timeout_s": (float, 1.0),
        "cache_dir": (str, "data/api/cache"),
        "cache_ttl_s": (float, 30.0),
        "queue_dir": (str, "queue/incoming"),
        "currency": (str, "EUR"),
        "sample_sku": (str, "SKU-0001"),
        "recompute_delay_s": (float, 1.0),
    },
)
svc.parser.add_argument("--inventory", required=True, help="Base URL of the inventory service.")


def inventory(path: str, body: Any = None) -> tuple[int, Any]:
    return call_json(svc.args.inventory.rstrip("/") + path, body, svc.config["inventory_timeout_s"])


def price(item: dict[str, Any]) -> dict[str, Any]:
    """A product page: the item with its price in the shop's currency."""
    if svc.flags.get("recompute_prices", False):
        # The flag recomputes the whole price list on every request instead of using the cached one.
        time.sleep(svc.config["recompute_delay_s"])
    # v2: member discount. The field was renamed in a branch of inventory that never shipped.
    cents = int(item["price_cents"]) * (100 - int(svc.flags.get("member_discount_pct", 0))) // 100
    return {
        "sku": item["sku"],
        "name": item["name"],
        "price": f"{cents / 100:.2f} {svc.config['currency']}",
        "in_stock": int(item["qty"]) > 0,
        "release": svc.release,
    }


def health() -> tuple[bool, dict[str, Any]]:
    status, item = inventory(f"/stock/{svc.config['sample_sku']}")
    if status != 200:
        svc.log("ERROR", f"health check: inventory answered {status} for {svc.config['sample_sku']}")
        return False, {"inventory": f"status {status}"}
    page = price(item)
    return True, {"inventory": "ok", "sample_price": page["price"]}


@svc.route("GET", "/products/{sku}")
def product(request: Request) -> Response:
    sku = request.params["sku"]
    cache = Path(svc.config["cache_dir"]) / f"{sku}.json"
    try:
        if time.time() - cache.stat().st_mtime < svc.config["cache_ttl_s"]:
            return 200, json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass  # not cached yet, or half written: ask inventory
    status, item = inventory(f"/stock/{sku}")
    if status != 200:
        return status, item
    page = price(item)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(page), encoding="utf-8")
    os.replace(tmp, cache)
    return 200, page


@svc.route("POST", "/orders")
def order(request: Request) -> Response:
    body = request.json()
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("sku"), str)
        or not isinstance(body.get("qty"), int)
    ):
        return 400, {"error": 'expected {"sku": "SKU-0001", "qty": 1}'}
    status, item = inventory(f"/stock/{body['sku']}")
    if status != 200:
        return status, item
    if int(item["qty"]) < body["qty"]:
        return 409, {"error": f"only {item['qty']} of {body['sku']} in stock"}
    order_id = uuid.uuid4().hex[:12]
    queue = Path(svc.config["queue_dir"])
    queue.mkdir(parents=True, exist_ok=True)
    job = {"id": order_id, "sku": body["sku"], "qty": body["qty"], "at": time.time()}
    tmp = queue / f".{order_id}.tmp"
    tmp.write_text(json.dumps(job), encoding="utf-8")
    # A rename is atomic: the worker never sees half an order.
    os.replace(tmp, queue / f"{time.time_ns()}-{order_id}.json")
    svc.log("INFO", f"order {order_id}: {body['qty']} x {body['sku']} queued")
    return 202, {"order": order_id}


svc.health_check = health

if __name__ == "__main__":
    svc.setup()
    svc.serve()
