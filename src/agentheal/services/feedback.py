"""An operator marks noise: mute a log template or a gap's fingerprint, for a while or until unmuted.

The CLI (`agentheal feedback mute|unmute|mutes`) and chat-ops (`mute`) call these functions with
the settings they hold. The mutes are kept under the home folder (`agentheal.detect.mutes`), and
detection reads them at its next round: a muted log template scores 0 and opens no gap, a muted
fingerprint's gap does not open, whatever detected it. Unmuting brings them back at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agentheal.detect.mutes import Mute, MuteBook, MuteError, kind_of, parse_duration

if TYPE_CHECKING:
    from agentheal.config import Settings

__all__ = ["Mute", "MuteError", "active_mutes", "mute", "unmute"]

MAX_TARGET = 500


def mute(settings: Settings, target: str, duration: str | float | None = None, by: str | None = None) -> Mute:
    """Mute a template (or part of one) or a fingerprint; muting it again replaces the old mute.

    Args:
        settings: Whose home folder keeps the mutes.
        target: A gap fingerprint (16 hex digits) or a log template, e.g. `cache: miss for key`.
        duration: How long: seconds, or text such as `2h`, `30m`, `1d`; None: until unmuted.
        by: Who asked (kept with the mute).

    Raises:
        MuteError: The target is empty or too long, or the duration is not positive.
    """
    target = target.strip()
    if not target:
        raise MuteError("say what to mute: a log template (or part of one) or a gap fingerprint")
    if len(target) > MAX_TARGET:
        raise MuteError(f"the mute target is {len(target)} characters; at most {MAX_TARGET}")
    seconds = parse_duration(duration) if isinstance(duration, str) else duration
    if seconds is not None and seconds <= 0:
        raise MuteError(f"duration {seconds:g} s: give a positive duration")
    now = time.time()
    made = Mute(
        target=target,
        kind=kind_of(target),
        since=now,
        until=now + seconds if seconds is not None else None,
        by=by,
    )
    book = MuteBook(settings.home_dir)
    book.save([m for m in book.active(now) if m.target != target] + [made])
    return made


def unmute(settings: Settings, target: str) -> Mute | None:
    """End the mute of `target`; returns the mute ended, or None when it was not muted."""
    target = target.strip()
    book = MuteBook(settings.home_dir)
    now = time.time()
    ended = next((m for m in book.active(now) if m.target == target), None)
    if ended is not None:
        book.save([m for m in book.active(now) if m.target != target])
    return ended


def active_mutes(settings: Settings) -> list[Mute]:
    """The mutes in force now, oldest first."""
    return sorted(MuteBook(settings.home_dir).active(), key=lambda m: m.since)
