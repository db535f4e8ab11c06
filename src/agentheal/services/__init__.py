"""The application services every door calls (CLI, HTTP API, and the doors to come), so no door
calls another door:

- `heal`: a gap read from a door's input, healed at once or in a server's bounded pool; approvals;
- `runs`: pages of runs with filters, one run as `heal --json` with its story, its node events;
- `audit`: the audit trail of changes and who made them;
- `memory`: search and import of resolution memory;
- `agents`: the agents with their records;
- `estate`: the estate's health, and faults;
- `signals`: alerts and feedback turned into gaps;
- `feedback`: an operator's mutes of log templates and gap fingerprints (noise);
- `documents`: a run's story as text, persona files, the estate file, a run's result in brief.

Submodules are imported by name (`from agentheal.services.runs import list_runs`); this package
imports none of them, so a door loads only what it uses.
"""

__all__ = [
    "agents",
    "audit",
    "documents",
    "estate",
    "feedback",
    "heal",
    "memory",
    "runs",
    "signals",
    "status",
]
