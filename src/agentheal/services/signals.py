"""Alerts and feedback from outside, turned into gaps and heals the way `agentheal watch` does it.

An Alertmanager webhook payload is parsed as detection parses it (`detect.alerts`): each firing
alert is a signal that opens or renews a gap, tied to a component by its labels; a resolved one
closes its gap. A person's feedback becomes a signal linked to a component and, when its words
match a known gap, joins that gap. The signals go into a gap book kept for the life of the intake
(the server's), correlated along the estate's dependencies, and each gap watch would heal (an
`incident` or `predicted` gap on a component of the estate that follows no root gap) is handed to
`submit`, the heal door of whoever holds the intake. Gaps not healed are recorded in the event
store as watch records them when it does not heal, so recurring patterns still see them.

When a watch loop runs in the same process (`serve --watch`), the signals go to its detector
instead and are taken at its next round: one gap book, one dispatcher.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentheal.detect.alerts import AlertError, WebhookMessage, alert_signals, feedback_signal, parse_webhook
from agentheal.detect.gaps import GapBook, TrackedGap
from agentheal.models import Gap, GapKind, Signal, fingerprint_of

if TYPE_CHECKING:
    from agentheal.detect.detector import Detector
    from agentheal.detect.mutes import MuteBook
    from agentheal.estate.model import Estate
    from agentheal.events import EventStore

HEAL_KINDS = (GapKind.incident, GapKind.predicted)  # what watch heals; the others are reported
SubmitFn = Callable[[Gap], str | None]  # a gap to heal -> the run id it started or joined (None: not now)

__all__ = ["AlertError", "GapOutcome", "IntakeResult", "SignalIntake", "SignalRequestError"]


class SignalRequestError(ValueError):
    """A signal that names something the estate does not have; the message names the known ones."""


class GapOutcome(BaseModel):
    """A gap a signal opened, renewed or closed, and what became of it."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str
    kind: str
    component: str | None
    severity: str
    text: str
    status: str = Field(
        description="healing (a run was started or joined), not_healed (why says why), closed, muted (an "
        "operator muted its fingerprint), or queued (taken by the watch loop at its next round)"
    )
    run_id: str | None = None
    why: str | None = Field(default=None, description="Why the gap is not healed, when it is not.")


class IntakeResult(BaseModel):
    """What a webhook or a feedback did."""

    model_config = ConfigDict(extra="forbid")

    signals: int = Field(description="Signals taken: one per alert, one per feedback.")
    gaps: list[GapOutcome]


def _outcome(gap: Gap, status: str, run_id: str | None = None, why: str | None = None) -> GapOutcome:
    return GapOutcome(
        fingerprint=gap.fingerprint,
        kind=gap.kind.value,
        component=gap.component,
        severity=gap.severity.value,
        text=gap.text,
        status=status,
        run_id=run_id,
        why=why,
    )


def _fingerprint(signal: Signal) -> str:
    """The fingerprint of the gap a problem signal opens (as `GapBook.add` derives it)."""
    kind = str(signal.data.get("kind", GapKind.incident.value))
    return str(signal.data.get("fingerprint") or fingerprint_of(kind, signal.component, signal.text))


def _signal_outcome(signal: Signal, status: str, why: str | None = None) -> GapOutcome:
    return GapOutcome(
        fingerprint=_fingerprint(signal),
        kind=str(signal.data.get("kind", GapKind.incident.value)),
        component=signal.component,
        severity=str(signal.data.get("severity", "medium")),
        text=signal.text,
        status=status,
        why=why,
    )


class SignalIntake:
    """Takes alerts and feedback for one estate for as long as its holder lives; thread-safe."""

    def __init__(
        self,
        estate: Estate | None,
        events: EventStore | None,
        detector: Detector | None = None,
        detector_lock: threading.Lock | None = None,
        mutes: MuteBook | None = None,
    ) -> None:
        """Set up the intake.

        Args:
            estate: The estate signals are tied to (components by name, labels or port).
            events: Where unhealed gaps are recorded and known gaps are read for feedback.
            detector: A running watch loop's detector: signals are queued for its next round.
            detector_lock: The lock the watch loop holds while it reads its gap book.
            mutes: An operator's mutes (`agentheal feedback mute`): a muted fingerprint opens no gap.
        """
        self.estate = estate
        self.events = events
        self.detector = detector
        self.mutes = mutes
        self._detector_lock = detector_lock or threading.Lock()
        self.book = GapBook(estate)
        self._lock = threading.Lock()

    # -- what comes in -----------------------------------------------------------------------------

    def alertmanager(
        self, payload: WebhookMessage | bytes | str | dict[str, Any], submit: SubmitFn | None = None
    ) -> IntakeResult:
        """Take an Alertmanager webhook payload; `submit` starts (or joins) the heal of a gap that
        watch would heal (None: heal nothing).

        Raises:
            AlertError: The payload is malformed; the field is named (`alerts.0.labels.alertname: missing`).
        """
        if isinstance(payload, WebhookMessage):
            payload = payload.model_dump(mode="json")
        message = parse_webhook(payload)
        return self._take(alert_signals(message, self.estate), submit)

    def feedback(
        self, text: str, component: str | None = None, submit: SubmitFn | None = None
    ) -> IntakeResult:
        """Take a person's report, linked to a component and to a known gap when its words match one;
        `submit` as for `alertmanager`.

        Raises:
            AlertError: The text is empty.
            SignalRequestError: `component` is not a component of the estate.
        """
        component = (component or "").strip() or None
        if component is not None and self.estate is not None and component not in self.estate.components:
            known = ", ".join(sorted(self.estate.components))
            raise SignalRequestError(
                f"unknown component {component!r}: the estate {self.estate.name!r} has {known}"
            )
        with self._lock:
            known_gaps = [t.gap for t in self.book.open.values()]
        if self.detector is not None:
            with self._detector_lock:
                known_gaps += [t.gap for t in self.detector.book.open.values()]
        if self.events is not None:
            known_gaps += self.events.gaps(limit=500)
        return self._take([feedback_signal(text, self.estate, known_gaps, component)], submit)

    # -- into gaps and heals ----------------------------------------------------------------------

    def _take(self, signals: list[Signal], submit: SubmitFn | None) -> IntakeResult:
        if self.detector is not None:  # the loop's detector applies the mutes at its round
            for s in signals:
                self.detector.push(s)
            queued = [_signal_outcome(s, "closed" if s.data.get("ok") else "queued") for s in signals]
            return IntakeResult(signals=len(signals), gaps=queued)
        muted: list[GapOutcome] = []
        if self.mutes is not None:
            self.mutes.refresh()
            kept = []
            for s in signals:
                mute = None if s.data.get("ok") else self.mutes.fingerprint_muted(_fingerprint(s))
                if mute is None:
                    kept.append(s)
                else:
                    until = "until unmuted" if mute.until is None else f"until {time.ctime(mute.until)}"
                    why = f"muted by {mute.by or 'an operator'} {until} (`agentheal feedback unmute`)"
                    muted.append(_signal_outcome(s, "muted", why))
            signals_in, signals = len(signals), kept
        else:
            signals_in = len(signals)
        touched: dict[str, TrackedGap] = {}
        closed: list[TrackedGap] = []
        with self._lock:
            for s in signals:
                if s.data.get("ok"):
                    closed += self.book.close(s.component, str(s.data.get("channel", "")))
                    continue
                tracked = self.book.add(s)
                if tracked is not None:
                    touched[tracked.gap.fingerprint] = tracked
            self.book.expire()
            self.book.correlate()
            self.book.drain_changes()
            gaps = [
                t.gap.model_copy(deep=True) for t in touched.values() if t.gap.fingerprint in self.book.open
            ]
        out = muted + [_outcome(t.gap, "closed") for t in closed]
        out += [self._dispatch(gap, submit) for gap in gaps]
        return IntakeResult(signals=signals_in, gaps=out)

    def _why_not(self, gap: Gap, submit: SubmitFn | None) -> str | None:
        if gap.root is not None:
            return f"it follows the root gap {gap.root}, which is healed instead"
        if gap.kind not in HEAL_KINDS:
            return f"{gap.kind.value} gaps are reported, not healed"
        if gap.component is None or self.estate is None or gap.component not in self.estate.components:
            return "no component of the estate is named by it"
        if submit is None:
            return "nothing heals it here (detection only)"
        return None

    def _dispatch(self, gap: Gap, submit: SubmitFn | None) -> GapOutcome:
        why = self._why_not(gap, submit)
        if why is None:
            assert submit is not None
            try:
                run_id = submit(gap)
            except RuntimeError as exc:  # the holder is stopping: the gap is kept as history
                run_id, why = None, f"not healed now: {exc}"
            else:
                why = f"a heal of {gap.component} is running; this gap waits for the next signal"
            if run_id is not None:
                return _outcome(gap, "healing", run_id=run_id)
        if self.events is not None:
            self.events.record_gap(gap)  # history for recurring gaps, as watch records what it does not heal
        return _outcome(gap, "not_healed", why=why)

    def open_gaps(self) -> list[TrackedGap]:
        """The gaps open in this intake's book, roots first."""
        with self._lock:
            self.book.expire()
            return self.book.tracked()
