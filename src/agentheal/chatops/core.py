"""The chat core: what a chat message or a button press does, whoever the platform is.

`ChatOps.handle` answers one message (a command, or help), `ChatOps.press` one Approve / Reject
button. Both go through the application services only (the heal pool, runs, approvals, the audit
trail), as every door does; a platform adapter turns what they answer into its own messages. Who
may do what comes from the settings' `chat_roles` (`{"slack:U0123": "operator"}`): viewers ask,
operators (and admins) also heal, approve, reject and mute. Every command lands in the audit
trail with the chat user's identity (`slack:U0123`) and role.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentheal.chatops import views
from agentheal.chatops.follow import RunThreads
from agentheal.chatops.messages import ChatUser, Message, Place, Poster
from agentheal.chatops.parser import Command, NotACommand, parse
from agentheal.services import audit

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.services.heal import HealPool

__all__ = ["ROLES", "ChatOps", "Pressed"]

log = logging.getLogger("agentheal.chatops")

ROLES = ("viewer", "operator", "admin")  # each allows what the ones before it do
_NEEDS = {
    "heal": "operator",
    "approve": "operator",
    "reject": "operator",
    "mute": "operator",
    "status": "viewer",
    "runs": "viewer",
    "show": "viewer",
    "why": "viewer",
    "help": None,
}


def allows(role: str | None, needed: str | None) -> bool:
    """Whether `role` may do what needs `needed` (None: anyone, even without a role)."""
    if needed is None:
        return True
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Pressed:
    """What a button press did: the reply to show, and whether only the presser may see it."""

    message: Message
    private: bool


class ChatOps:
    """The conversation and the run threads of one process (a server, or `agentheal chat`)."""

    def __init__(self, pool: HealPool, settings: Settings) -> None:
        self.pool = pool
        self.ctx = pool.ctx
        self.settings = settings
        self.roles: dict[str, str] = dict(settings.chat_roles)
        self.default_role = settings.chat_default_role
        self.threads = RunThreads(pool, settings)
        previous = self.ctx.progress

        def progress(run_id: str | None, node: str, detail: str, data: dict[str, Any]) -> None:
            if previous is not None:
                previous(run_id, node, detail, data)
            self.threads.wake()  # a run's thread posts the step now rather than at its next look

        self.ctx.progress = progress
        # a new run's first steps reach the event store together, after they were said
        self.ctx.events.held_written.append(lambda run_id: self.threads.wake())

    def role_of(self, user: ChatUser) -> str | None:
        """The user's role: as mapped in `chat_roles`, else `chat_default_role` (None: no role)."""
        return self.roles.get(user.actor, self.default_role)

    def _audit(
        self,
        user: ChatUser,
        action: str,
        target: str | None = None,
        *,
        outcome: str = "ok",
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        audit.record(
            self.ctx.events,
            user.actor,
            action,
            door=user.platform,
            role=self.role_of(user),
            target=target,
            outcome=outcome,
            detail=detail,
            data={"name": user.name, **(data or {})},
        )

    def _refused(self, user: ChatUser, action: str, needed: str, target: str | None = None) -> Message:
        role = self.role_of(user)
        reason = (f"{user.shown} has role {role}" if role else f"{user.shown} ({user.actor}) has no role") + (
            f"; `{action}` needs {needed} or above"
        )
        self._audit(user, action, target, outcome="refused", detail=reason)
        hint = "" if role else f' An admin maps you in the setting chat_roles: `"{user.actor}": "viewer"`.'
        return Message(
            text=f"You may not {action}: {reason}.",
            lines=[f"You may not {action}: {reason}.{hint}"],
            tone="warning",
        )

    # -- messages --

    def handle(self, user: ChatUser, text: str, where: Place, poster: Poster) -> Message:
        """The reply to one message; a `heal` also opens the run's thread in `where`."""
        parsed = parse(text)
        if isinstance(parsed, NotACommand):
            return views.help_message(parsed.problem, parsed.command or "")
        needed = _NEEDS[parsed.name]
        if not allows(self.role_of(user), needed):
            assert needed is not None
            return self._refused(
                user, parsed.name, needed, parsed.args.get("run") or parsed.args.get("component")
            )
        try:
            return self._do(parsed, user, where, poster)
        except Exception as exc:  # a service's refusal, said in chat; the bot carries on
            log.warning("chat %s by %s failed: %s", parsed.name, user.actor, exc)
            return Message(text=f"{parsed.name}: {exc}", lines=[f"`{parsed.name}`: {exc}"], tone="bad")

    def _do(self, command: Command, user: ChatUser, where: Place, poster: Poster) -> Message:
        name, args = command.name, command.args
        if name == "heal":
            return self._heal(user, args["component"], args["text"], where, poster)
        if name in ("approve", "reject"):
            return self._answer(user, args["run"], name == "approve", args.get("note", ""))
        if name == "mute":
            return self._mute(user, command)
        self._audit(user, name, args.get("run") or args.get("component"))
        if name == "help":
            return views.help_message(topic=args.get("topic", ""))
        if name == "status":
            return self._status()
        if name == "runs":
            from agentheal.services.runs import list_runs

            return views.run_list(
                list_runs(self.ctx.events, limit=10, component=args.get("component")).runs,
                args.get("component"),
            )
        result = self._result(args["run"])
        return views.show(result) if name == "show" else views.why(result)

    def _result(self, run: str) -> dict[str, Any]:
        from agentheal.services.runs import show_run

        shown = show_run(self.ctx.events, run, self.settings) or self.pool.queued(run)
        if shown is None:
            raise LookupError(f"no run {run!r}; `runs` lists them")
        return shown

    def _heal(self, user: ChatUser, component: str, text: str, where: Place, poster: Poster) -> Message:
        from agentheal.services.heal import parse_gap

        gap = parse_gap({"text": text, "component": component})
        run_id, _future, joined = self.pool.submit(
            gap, actor=user.actor, door=user.platform, role=self.role_of(user)
        )
        if joined and self.threads.following(run_id):
            return Message(
                text=f"joined run {run_id[:12]}",
                lines=[f"That joined run `{run_id[:12]}`, already followed in its thread."],
            )
        head = views.started(run_id, component, text, user.shown, joined)
        self.threads.follow(run_id, poster, where, head)
        return Message(
            text=f"healing {component}: run {run_id[:12]}",
            lines=[f"Healing `{component}`: run `{run_id[:12]}`; its steps follow in its thread."],
        )

    def _answer(self, user: ChatUser, run: str, approved: bool, note: str) -> Message:
        by = f"{user.name} ({user.actor})" if user.name else user.actor
        # queued behind any heal of its component; the run's thread says how it ends
        self.pool.answer(
            run, approved, by=by, note=note, actor=user.actor, door=user.platform, role=self.role_of(user)
        )
        run_id = self.threads.answered(run, approved, by, note)
        verb = "approved" if approved else "rejected"
        said = f"Run `{run_id[:12]}` {verb} by {by}."
        return Message(text=said.replace("`", ""), lines=[said])

    def _mute(self, user: ChatUser, command: Command) -> Message:
        from datetime import UTC, datetime

        from agentheal.services.feedback import mute  # detection reads these mutes at its next round

        assert command.duration is not None
        fingerprint = command.args["fingerprint"]
        made = mute(self.settings, fingerprint, command.duration.total_seconds(), by=user.actor)
        until = datetime.fromtimestamp(made.until or 0, UTC)
        self._audit(
            user, "mute", fingerprint, detail=f"for {command.args['for']}", data={"until": until.isoformat()}
        )
        said = f"Muted `{fingerprint}` until {until:%Y-%m-%d %H:%M} UTC: its gaps open no run until then."
        return Message(text=said.replace("`", ""), lines=[said])

    def _status(self) -> Message:
        from agentheal.services.runs import list_runs

        events = self.ctx.events
        waiting = list_runs(events, limit=20, status="awaiting_approval").runs
        busy = self.pool.busy()
        lines = [
            f"Heals running {busy['running']}, queued {busy['queued']}; "
            f"{len(waiting)} run(s) waiting for approval."
        ]
        lines += [f"✋ `{r.run_id[:12]}` {r.component}: {r.reason or ''}" for r in waiting[:5]]
        facts: list[tuple[str, str]] = []
        backend = self.ctx.backend
        if backend is not None:
            from agentheal.services.estate import health

            for h in health(backend):
                facts.append((h.name, "healthy" if h.healthy else "unhealthy"))
        return Message(
            text=lines[0],
            title="agentheal status",
            lines=lines,
            facts=facts,
            tone="good" if all(v == "healthy" for _, v in facts) else "bad",
        )

    # -- buttons --

    def press(self, user: ChatUser, action: str, run: str) -> Pressed:
        """An Approve / Reject button pressed; anyone but an operator is told privately they may not
        (the adapter shows `Pressed.message` to the presser alone when `private`)."""
        if action not in ("approve", "reject"):
            return Pressed(views.help_message(f"unknown button {action[:40]!r}"), True)
        if not allows(self.role_of(user), "operator"):
            return Pressed(self._refused(user, action, "operator", run), True)
        try:
            return Pressed(self._answer(user, run, action == "approve", ""), False)
        except Exception as exc:
            return Pressed(Message(text=f"{action}: {exc}", lines=[f"`{action}`: {exc}"], tone="bad"), True)

    def close(self) -> None:
        """Stop following runs (their threads stop at their next look)."""
        self.threads.close()
