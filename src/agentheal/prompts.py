"""Prompt templates: Jinja2 over the `prompts/` folder, strict about the keys they need.

Each template declares its context keys in `REQUIRED_KEYS`; `render` refuses a call that
misses one or passes one the template does not know, so templates and the code that fills
them cannot drift apart silently. Text an LLM wrote (generated personas) is rendered with
`render_sandboxed`, never with the trusting environment.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import TYPE_CHECKING, Any

from agentheal.config import package_data

if TYPE_CHECKING:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

REQUIRED_KEYS: dict[str, frozenset[str]] = {
    "triage.j2": frozenset({"gap", "components"}),
    "diagnose_system.j2": frozenset({"persona", "estate_name"}),
    "diagnose_user.j2": frozenset({"gap", "component", "facts", "evidence", "memory"}),
    "plan_system.j2": frozenset({"persona", "actions"}),
    "plan_user.j2": frozenset({"gap", "diagnosis", "memory", "avoid", "components"}),
    "factory_design_system.j2": frozenset({"actions", "personas", "facts_vocabulary", "kinds"}),
    "factory_design_user.j2": frozenset({"gap", "facts", "candidates"}),
    # Rendered in the sandbox (agentheal.factory.render): its values are words an LLM wrote.
    "factory_persona.j2": frozenset(
        {"title", "role", "goal", "gap_kind", "gap_text", "component", "expertise", "facts", "actions"}
        | {"procedures", "playbooks", "receives_from", "hands_to", "escalates_when", "judged_by"}
    ),
}


class PromptError(Exception):
    """A template is unknown, misses context keys, or fails to render."""


_BACKTICKS = re.compile(r"`{3,}")


def fenced(value: Any, label: str = "text") -> str:
    """Put untrusted text in a Markdown code fence it cannot close.

    The fence is one backtick longer than the longest run of backticks inside, so a log
    line holding ``` cannot end the block and smuggle text out of it.

    Args:
        value: The data; anything not a string is shown with `str()`.
        label: The info string after the opening fence.

    Returns:
        The fenced block, without a trailing newline.
    """
    text = value if isinstance(value, str) else str(value)
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{label}\n{text.rstrip(chr(10))}\n{fence}"


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _add_filters(env: jinja2.Environment) -> None:
    env.filters["fenced"] = fenced
    env.filters["to_json"] = _to_json


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment over the shipped `prompts/` folder (StrictUndefined, no autoescape)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(package_data("prompts")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are plain text for a model, not HTML
        keep_trailing_newline=True,
        # Block tags on their own lines leave no blank lines behind, so templates stay readable.
        trim_blocks=True,
        lstrip_blocks=True,
    )
    _add_filters(env)
    return env


@cache
def _sandbox() -> SandboxedEnvironment:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    _add_filters(env)
    return env


def render(name: str, **ctx: Any) -> str:
    """Render a template from `prompts/` with exactly the keys it declares.

    Args:
        name: Template file name, e.g. "plan_system.j2".
        **ctx: The template's context; must match `REQUIRED_KEYS[name]`.

    Returns:
        The rendered prompt.

    Raises:
        PromptError: Unknown template, missing or unexpected keys, or a render failure
            (e.g. an attribute the template reads is missing), naming the template.
    """
    import jinja2

    if name not in REQUIRED_KEYS:
        raise PromptError(f"unknown prompt template {name!r}; known: {', '.join(sorted(REQUIRED_KEYS))}")
    required = REQUIRED_KEYS[name]
    missing = sorted(required - ctx.keys())
    unexpected = sorted(ctx.keys() - required)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        raise PromptError(f"prompt {name}: {'; '.join(problems)} (it takes {sorted(required)})")
    try:
        return environment().get_template(name).render(**ctx)
    except jinja2.TemplateNotFound as err:
        raise PromptError(f"prompt template {name} not found in {package_data('prompts')}") from err
    except jinja2.TemplateError as err:
        raise PromptError(f"prompt {name} failed to render: {err}") from err


def render_sandboxed(source: str, **ctx: Any) -> str:
    """Render template text an LLM wrote, in Jinja2's sandbox.

    The sandbox blocks access to internals (`__class__`, `__globals__`, unsafe methods), so
    a generated persona cannot reach Python through its template.

    Args:
        source: The template text.
        **ctx: Its context.

    Returns:
        The rendered text.

    Raises:
        PromptError: Syntax error, undefined variable or a blocked (unsafe) operation.
    """
    import jinja2

    try:
        return _sandbox().from_string(source).render(**ctx)
    except jinja2.TemplateSyntaxError as err:
        raise PromptError(
            f"generated template has a syntax error at line {err.lineno}: {err.message}"
        ) from err
    except jinja2.TemplateError as err:
        raise PromptError(f"generated template refused: {type(err).__name__}: {err}") from err
