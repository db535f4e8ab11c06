"""What a worker does with a claim of the work table: heal its gap or carry on its resume, fenced by
the claim (agentheal.work.fencing), and say in the run's story when the claim was lost meanwhile."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agentheal.event_schema import OPEN_STATUSES
from agentheal.work import resumes, runlocks
from agentheal.work.fencing import Fences, LeaseLost
from agentheal.work.queue import Claim
from agentheal.work.tables import HEAL

if TYPE_CHECKING:
    from agentheal.graphs.runner import Healer

_log = logging.getLogger("agentheal.work")


def heal_claim(healer: Healer, claim: Claim, fences: Fences, worker: str) -> dict[str, Any]:
    """Heal (or resume) the claimed run here; its actions and its end are written only while the claim
    is this worker's.

    Raises:
        LeaseLost: another worker took the claim over meanwhile; the run stopped here, and why is in
            its story (node `lease`).
    """
    fences.hold(claim.run_id, worker, claim.claims)
    try:
        if claim.resumed:
            _take_over(healer, claim, worker)
        if claim.kind != HEAL:
            return resumes.carry_on(healer, claim)
        if claim.resumed:  # its last worker may have died after the run ended, before marking it done
            detail = healer.ctx.events.run(claim.run_id)
            if detail is not None and detail.row.status.value not in OPEN_STATUSES:
                from agentheal.graphs.results import recorded_result

                return recorded_result(detail)
        return healer.heal(claim.gap, dry_run=claim.dry_run, run_id=claim.run_id)
    except LeaseLost as exc:
        _log.warning("%s", exc)
        healer.ctx.say(
            claim.run_id,
            "lease",
            str(exc),
            {"worker": worker, "claim": claim.claims, "holder": exc.holder, "stopped": True},
        )
        raise
    finally:
        fences.release(claim.run_id)


def _take_over(healer: Healer, claim: Claim, worker: str) -> None:
    """A claim this worker took over: a stalled worker's session may still hold the run's lock
    (it would make this heal join the run instead of resuming it); it is ended."""
    url = healer.ctx.settings.database_url
    if url is None:
        return
    ended = runlocks.seize(url.get_secret_value(), claim.gap.fingerprint, worker)
    if ended:
        _log.warning(
            "run %s: ended the session of the worker it was taken over from (pid %s on the server)",
            claim.run_id[:12],
            ", ".join(map(str, ended)),
        )
