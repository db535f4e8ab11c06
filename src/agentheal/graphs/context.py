"""What the heal graph's nodes act through: estate backend, events, memory, personas, policy, LLM.

Each part is opened on first use, so a run that replays a playbook never loads the LLM client,
and drawing the graph loads nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentheal.models import utcnow

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import Estate
    from agentheal.events import EventStore
    from agentheal.llm import LLM
    from agentheal.memory import Memory
    from agentheal.personas import Registry
    from agentheal.policy import Policy

ProgressFn = Any  # Callable[[run_id | None, node, detail, data], None]


@dataclass
class HealContext:
    """The edges of a heal: one per process, shared by the runs it drives."""

    settings: Settings
    estate_path: Path | None = None
    policy_path: Path | None = None
    progress: ProgressFn | None = None
    _llms: dict[str, LLM] = field(default_factory=dict)
    _registry: Registry | None = None
    _registry_stamp: tuple[tuple[str, int, int], ...] = ()
    _http: Any = None
    # runs this process resumes after the process driving them ended: their execute skips the steps
    # already recorded as run (graphs.execute)
    resumed: set[str] = field(default_factory=set)

    @cached_property
    def estate(self) -> Estate | None:
        if self.estate_path is None:
            return None
        from agentheal.estate.model import load_estate

        return load_estate(self.estate_path)

    @cached_property
    def backend(self) -> LocalBackend | None:
        if self.estate is None:
            return None
        from agentheal.estate.local import LocalBackend

        return LocalBackend(self.estate, self.settings.estates_dir / self.estate.name)

    @cached_property
    def events(self) -> EventStore:
        from agentheal.events import EventStore

        return EventStore(self.settings.events_url)

    @cached_property
    def memory(self) -> Memory:
        from agentheal.memory import Memory

        return Memory(self.settings)

    @property
    def registry(self) -> Registry:
        """The personas, loaded again whenever a persona file or the retirement register changed:
        an agent created, versioned or retired by another process is seen without a restart."""
        from agentheal.personas import Registry

        stamp = self._persona_stamp()
        if self._registry is None or stamp != self._registry_stamp:
            self._registry, self._registry_stamp = Registry.load(self.settings), stamp
        return self._registry

    def _persona_stamp(self) -> tuple[tuple[str, int, int], ...]:
        folders = [self.settings.generated_personas_dir, self.settings.personas_dir]
        found = []
        for folder in folders:
            if folder is None or not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file() and entry.name.endswith((".md", ".yaml")):
                        info = entry.stat()
                        found.append((entry.path, info.st_mtime_ns, info.st_size))
        return tuple(sorted(found))

    @cached_property
    def policy(self) -> Policy:
        from agentheal.policy import load_policy

        return load_policy(self.policy_path or self.settings.policy_file, self.settings)

    def publish(self, run_id: str) -> None:
        """Write what a run's steps said and the event store holds back (a new run's first steps),
        before a step that may take a while: asking an LLM or a remote agent."""
        if "events" in self.__dict__:
            self.events.write_held(run_id, release=False)

    def llm(self, run_id: str) -> LLM:
        """The LLM door for one run; raises LLMNotConfigured when no endpoint is set."""
        self.publish(run_id)
        if run_id not in self._llms:

            def record(call: Any) -> None:
                self.events.llm_call(
                    run_id,
                    call.model,
                    call.purpose,
                    call.prompt_tokens,
                    call.completion_tokens,
                    call.duration_s,
                    call.ok,
                    usage_known=call.usage_known,
                    error=call.error,
                )

            def note(purpose: str, text: str) -> None:
                self.say(run_id, "llm", text, {"purpose": purpose})

            if self._http is None and self.settings.llm_configured:
                import httpx

                self._http = httpx.Client(timeout=self.settings.llm_timeout_s)
            self._llms[run_id] = self._new_llm(record, note)
        return self._llms[run_id]

    def _new_llm(self, on_call: Any, on_note: Any = None) -> LLM:
        """A run's LLM door (the bench replaces it with one that answers in-process)."""
        from agentheal.llm import LLM

        return LLM(self.settings, on_call=on_call, on_note=on_note, http_client=self._http)

    def release(self, run_id: str) -> None:
        """Forget a run's LLM door once the run stops driving (finished, or waiting for approval)."""
        llm = self._llms.pop(run_id, None)
        if llm is not None:
            llm.close()
        if "events" in self.__dict__:
            self.events.forget(run_id)

    def flush(self) -> None:
        """Write what memory holds back (pending heal records) to its vector index, if memory was opened."""
        if "memory" in self.__dict__:
            self.memory.flush()

    def say(self, run_id: str, node: str, detail: str, data: dict[str, Any] | None = None) -> None:
        """Record a node transition and show it to whoever watches."""
        self.events.node(run_id, node, detail, data or {})
        if self.progress is not None:
            self.progress(run_id, node, detail, data or {})

    def audit(self, record: dict[str, Any]) -> None:
        """Append one line to the append-only audit log: every action that ran, by whom, when."""
        line = {"at": utcnow().isoformat(), "pid": os.getpid(), **record}
        with self.settings.audit_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
