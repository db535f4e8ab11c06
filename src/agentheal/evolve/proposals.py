"""The two proposal kinds that change more than a list: a tighter policy and a new agent.

tighten_policy  an action that failed again and again on one component gets a lower rate limit
                there (a new version of the policy file under the home folder), so the next
                failures go to a person sooner instead of being tried once more. Only ever tighter:
                the new file is checked to allow nothing the old one refused.
create_agent    escalations piling up on one component (or gap kind) with no persona for them
                (the factory's own pattern trigger) get a specialist designed, validated and
                rendered by the agent factory — in a scratch home, so nothing is registered until
                the evolution applies the persona file as a versioned change.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.event_schema import ACTIONS, RUNS

if TYPE_CHECKING:
    from agentheal.graphs.evolve import EvolveJob

TIGHT_WINDOW_S = 3600.0


class ProposalError(Exception):
    """A proposal whose new version would not be valid, or not tighter."""


def failing_actions(job: EvolveJob) -> list[dict[str, Any]]:
    """Patterns of an action that failed at least `min_failures` times on one component in the window."""
    n = sa.func.count().label("n")
    rows = job.events.query(
        sa.select(ACTIONS.c.component, ACTIONS.c.action, n, sa.func.max(ACTIONS.c.run_id).label("run_id"))
        .where(ACTIONS.c.outcome == "failed", ACTIONS.c.dry_run.is_(False),
               ACTIONS.c.at >= job.now - job.window, ACTIONS.c.at <= job.now)
        .group_by(ACTIONS.c.component, ACTIONS.c.action)
        .having(sa.func.count() >= job.min_failures).order_by(n.desc())
    )  # fmt: skip
    out = []
    for r in rows:
        last = job.events.query(sa.select(RUNS.c.fingerprint).where(RUNS.c.run_id == r["run_id"]))
        out.append({"type": "failing", "component": r["component"], "action": r["action"],
                    "failures": int(r["n"]), "fingerprint": f"failing:{r['action']}({r['component']})",
                    "replay_of": last[0]["fingerprint"] if last else None})  # fmt: skip
    return out


def _current(job: EvolveJob) -> tuple[dict[str, Any], Any]:
    from agentheal.config import Settings
    from agentheal.estate.model import read_yaml_mapping
    from agentheal.policy import PolicyError, load_policy

    assert job.policy_file is not None
    data = read_yaml_mapping(job.policy_file, "policy file", PolicyError) if job.policy_file.is_file() else {}
    return data, load_policy(job.policy_file if job.policy_file.is_file() else None, Settings(home=job.home))


def tighten_policy(job: EvolveJob, p: dict[str, Any]) -> dict[str, Any] | None:
    """A lower rate limit for an action that failed again and again; None when it is tight already."""
    if job.policy_file is None or not job.policy_file.resolve().is_relative_to(job.home.resolve()):
        job.notes.append(
            f"{p['action']} failed {p['failures']} times on {p['component']}: a tighter policy needs a "
            f"policy file under the home folder to version ({job.policy_file or 'none set'}); not proposed"
        )
        return None
    _, policy = _current(job)
    from fnmatch import fnmatchcase

    for limit in policy.rate_limits:
        covers = limit.action == p["action"] and any(fnmatchcase(p["component"], c) for c in limit.components)
        if covers and limit.max <= 1 and limit.window_s >= TIGHT_WINDOW_S:
            return None
    entry = {"action": p["action"], "max": 1, "window_s": TIGHT_WINDOW_S, "components": [p["component"]]}
    why = f"{p['action']} failed {p['failures']} times on {p['component']} in {job.window.days} days"
    return {"kind": "tighten_policy", "target": str(job.policy_file), "entry": entry, "why": why,
            "fingerprint": p["fingerprint"], "replay_of": p["replay_of"]}  # fmt: skip


def tightened(job: EvolveJob, entry: dict[str, Any]) -> bytes:
    """The policy file's next version: `entry` added to its rate limits (the built-in ones kept when
    the file had none, since a file's list replaces them).

    Raises:
        ProposalError: The new version is not a valid policy.
    """
    import yaml
    from pydantic import ValidationError

    from agentheal.policy import Policy

    data, policy = _current(job)
    limits = data.get("rate_limits")
    if limits is None:
        limits = [r.model_dump() for r in policy.rate_limits]
    data["rate_limits"] = [*limits, entry]
    try:
        Policy.model_validate(data)
    except ValidationError as exc:
        raise ProposalError(f"the tightened policy would not be valid: {exc}") from None
    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")


def create_agent(job: EvolveJob) -> list[dict[str, Any]]:
    """A persona from the agent factory for each pile of escalations no persona handles."""
    from agentheal.config import Settings
    from agentheal.factory.patterns import propose
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.factory import create_for_gap

    settings = Settings(home=job.home, policy_file=job.policy_file)
    ctx = HealContext(settings, job.estate_file, policy_path=job.policy_file)
    piles = propose(
        job.events, ctx.registry, window_s=job.window.total_seconds(), min_count=job.min_repeats, now=job.now
    )
    out = []
    for pile in piles:
        scratch = Path(tempfile.mkdtemp(prefix="agentheal-evolve-factory-"))
        try:
            if settings.generated_personas_dir.is_dir():
                shutil.copytree(settings.generated_personas_dir, scratch / "personas")
            scratch_settings = Settings(home=scratch, policy_file=job.policy_file)
            draft = HealContext(scratch_settings, job.estate_file, policy_path=job.policy_file)
            made = create_for_gap(draft, pile.gap, [], None, trigger="pattern")
            if not made.registered or made.created is None or made.path is None:
                job.notes.append(f"{pile.key}: {pile.count} escalations; the factory made no agent: "
                                 + "; ".join(made.reasons))  # fmt: skip
                continue
            text = Path(made.path).read_text(encoding="utf-8")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        target = settings.generated_personas_dir / f"{made.created}.md"
        out.append({"kind": "create_agent", "target": str(target), "persona": made.created, "text": text,
                    "why": f"{pile.key}: {pile.count} runs escalated or failed with no persona for them",
                    "fingerprint": pile.gap.fingerprint})  # fmt: skip
    return out
