"""A Python client of `agentheal serve`, on httpx: what the CLI's `--server URL` talks through.

    with Client("http://127.0.0.1:8765", token="…") as api:
        result = api.heal({"text": "web is down", "component": "web"})   # the heal --json object
        for event in api.events(result["run_id"]):                        # its steps, as they happen
            print(event["node"], event["detail"])

Every answer the server refuses comes back as `ServerError` with the HTTP status and the
server's own words (it names the field or the problem); a server that cannot be reached is
`ServerUnreachable`. The token comes from the argument, else `AGENTHEAL_TOKEN`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx


class ClientError(Exception):
    """Talking to an agentheal server failed."""


class ServerUnreachable(ClientError):
    """No answer from the server's address (not running, wrong URL, a network problem)."""


class ServerError(ClientError):
    """The server answered with an error status; `.status` and the server's message say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the server answered {status}: {message}")
        self.status = status
        self.message = message


def _message(response: httpx.Response) -> str:
    """The server's own words from an error answer: FastAPI's detail, or a field list."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: each names its field
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("detail") or detail.get("title") or json.dumps(detail))
    return str(detail)


class Client:
    """One agentheal server.

    Args:
        base_url: The server's address, e.g. `http://127.0.0.1:8765`.
        token: A bearer token (`agentheal tokens add`); default `AGENTHEAL_TOKEN`, or none for a
            server started with `--insecure-local`.
        timeout_s: Time-out of each request that does not wait for a heal.
        transport: An httpx transport, for a test that serves the app in-process.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("AGENTHEAL_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def heal(
        self, gap: dict[str, Any], *, wait: bool = True, dry_run: bool = False, wait_s: float = 300.0
    ) -> dict[str, Any]:
        """Submit a gap; with `wait`, the heal's end as `agentheal heal --json` prints it.

        A heal that is still going when `wait_s` runs out comes back as `{"run_id", "status":
        "running", …}`; follow it with `run` or `events`.
        """
        params = {"wait": str(wait).lower(), "dry_run": str(dry_run).lower(), "timeout": wait_s}
        return self._object("POST", "/gaps", params=params, json=gap, timeout=wait_s + 30 if wait else None)

    def run(self, run_id: str) -> dict[str, Any]:
        """One run as `heal --json` shows it (its status current), with its story."""
        return self._object("GET", f"/runs/{run_id}")

    def runs(
        self,
        *,
        status: str | None = None,
        component: str | None = None,
        persona: str | None = None,
        since: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of runs, newest first: `{"runs": [...], "next_cursor": …}`."""
        params = {
            key: value
            for key, value in (
                ("status", status),
                ("component", component),
                ("persona", persona),
                ("since", since),
                ("limit", limit),
                ("cursor", cursor),
            )
            if value is not None
        }
        return self._object("GET", "/runs", params=params)

    def approve(
        self, run_id: str, *, by: str | None = None, note: str = "", wait_s: float = 300.0
    ) -> dict[str, Any]:
        """Approve a run waiting for approval; the run's end (or its current state after `wait_s`)."""
        return self._answer(run_id, "approve", by, note, wait_s)

    def reject(
        self, run_id: str, *, by: str | None = None, note: str = "", wait_s: float = 300.0
    ) -> dict[str, Any]:
        """Reject a run waiting for approval: nothing of its plan runs."""
        return self._answer(run_id, "reject", by, note, wait_s)

    def events(self, run_id: str, last_event_id: int | None = None) -> Iterator[dict[str, Any]]:
        """The run's steps as they happen, from after `last_event_id`, until the run ends.

        Each is the event's JSON with its type (`event`: `node`, `status` or `end`) and `id` (a
        `node` event's id resumes the stream after it).
        """
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        try:
            with self._http.stream(
                "GET", f"/runs/{run_id}/events", headers=headers, timeout=httpx.Timeout(None, connect=10)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(response.status_code, _message(response))
                kind, event_id, data = "message", None, []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif not line and data:
                        yield {"event": kind, "id": event_id, **json.loads("\n".join(data))}
                        if kind == "end":
                            return
                        kind, event_id, data = "message", None, []
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{self.base_url}: {exc}") from exc

    # --------------------------------------------------------------- memory

    def search_memory(self, text: str, k: int = 5, **params: Any) -> list[dict[str, Any]]:
        """Past resolutions most similar to `text`, best first (as `agentheal memory search --json`)."""
        found = self._json("GET", "/memory/search", params={"q": text, "k": k, **params})
        return list(found) if isinstance(found, list) else []

    # ------------------------------------------------------------- internals

    def _answer(self, run_id: str, verb: str, by: str | None, note: str, wait_s: float) -> dict[str, Any]:
        body = {"note": note, **({"by": by} if by else {})}
        return self._object(
            "POST", f"/runs/{run_id}/{verb}", params={"timeout": wait_s}, json=body, timeout=wait_s + 30
        )

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        found = self._json(method, path, **kwargs)
        if not isinstance(found, dict):
            raise ClientError(f"{method} {path}: expected a JSON object, got {type(found).__name__}")
        return found

    def _json(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, timeout=timeout or self._timeout_s, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the agentheal server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ServerError(response.status_code, _message(response))
        return response.json()
