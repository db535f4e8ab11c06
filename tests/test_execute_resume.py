"""A run resumed after its process ended does not run again the steps its story says already ran."""

from __future__ import annotations

from pathlib import Path

from agentheal.config import Settings
from agentheal.graphs.context import HealContext
from agentheal.graphs.execute import execute
from agentheal.models import Gap, Plan, Step


def _pid(ctx: HealContext) -> int:
    assert ctx.backend is not None
    (web,) = [h for h in ctx.backend.status() if h.name == "web"]
    assert web.pid
    return web.pid


def test_a_resumed_run_does_not_restart_twice(settings: Settings, tiny_estate_file: Path) -> None:
    ctx = HealContext(settings=settings, estate_path=tiny_estate_file)
    assert ctx.backend is not None
    assert all(r.outcome == "ok" for r in ctx.backend.up())
    try:
        run_id = "feedbeef" * 4
        ctx.events.start_run(run_id, Gap(text="web is slow", component="web"))
        plan = Plan(
            hypothesis="web is wedged", steps=[Step(action="restart", component="web")], source="persona"
        )
        state = {"run_id": run_id, "plan": plan.model_dump(mode="json"), "attempts": 0}
        before = _pid(ctx)
        first = execute(state, ctx)
        restarted = _pid(ctx)
        assert first["next"] == "validate" and restarted != before

        # The process driving the run ended after execute ran but before its checkpoint: the resumed
        # run executes again from the checkpoint before execute.
        ctx.resumed.add(run_id)
        again = execute(state, ctx)
        assert again["next"] == "validate" and again["actions"] == first["actions"]
        assert _pid(ctx) == restarted, "the restart ran a second time"
        detail = ctx.events.run(run_id)
        assert detail is not None and len(detail.actions) == 1
        assert "not again" in detail.timeline[-1].detail

        # A later attempt's plan (another try after a failed validation) runs its steps.
        execute({**state, "attempts": 1}, ctx)
        assert _pid(ctx) != restarted
        assert len(ctx.events.run(run_id).actions) == 2  # type: ignore[union-attr]
    finally:
        ctx.backend.down()
        ctx.events.close()
