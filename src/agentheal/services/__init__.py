"""The application services every door calls (CLI, HTTP API, and the doors to come): heal a gap,
show and list runs, approve or reject, the audit trail. No door calls another door.

Submodules are imported by name (`from agentheal.services.runs import list_runs`); this package
imports none of them, so a door loads only what it uses.
"""

__all__ = ["audit", "heal", "runs"]
