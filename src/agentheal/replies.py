"""LLM replies: the JSON schema sent for a reply model, and parsing a reply back into it.

OpenAI's strict structured-output mode needs closed objects with every field required; a
pydantic schema is rewritten for it when it can be, else sent as is with strict off. Parse
failures come back as a reason that names the failing field, for the one retry the LLM gets.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

_STRICT_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "$ref", "$defs", "description", "title", "default", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "pattern", "format", "minItems", "maxItems",
}  # fmt: skip


class _NotStrict(Exception):
    pass


def _close(node: Any) -> Any:
    """Rewrite a JSON schema node for OpenAI strict mode, or raise _NotStrict."""
    if isinstance(node, list):
        return [_close(n) for n in node]
    if not isinstance(node, dict):
        return node
    unknown = set(node) - _STRICT_KEYWORDS
    if unknown:
        raise _NotStrict(f"keywords {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default":
            continue  # strict mode rejects defaults; every field becomes required instead
        if key in ("properties", "$defs"):
            out[key] = {name: _close(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _close(value)
        else:
            out[key] = value
    if node.get("type") == "object" or "properties" in node:
        # A free-form object (dict[str, Any]) cannot be closed: strict mode needs every key named.
        if not node.get("properties") or node.get("additionalProperties", False) is not False:
            raise _NotStrict("free-form object")
        out["additionalProperties"] = False
        out["required"] = list(node["properties"])
    return out


@functools.cache
def response_schema(schema: type[BaseModel]) -> tuple[dict[str, Any], bool]:
    """The JSON schema to send for a reply model, and whether strict mode can hold it.

    Args:
        schema: The pydantic model the reply must validate into.

    Returns:
        (schema, strict): the closed, all-required schema with strict True when OpenAI's
        strict mode can express the model; else pydantic's own schema with strict False.
    """
    raw = schema.model_json_schema()
    try:
        return _close(raw), True
    except _NotStrict:
        return raw, False


_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:6]:
        where = ".".join(str(p) for p in e["loc"]) or "(the whole object)"
        parts.append(f"field '{where}': {e['msg']}")
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_reply(content: str | None, schema: type[T]) -> tuple[T | None, str]:
    """Parse a model's reply into `schema`.

    Args:
        content: The reply text; code fences and prose around one JSON object are tolerated.
        schema: The pydantic model to validate into.

    Returns:
        (value, "") on success, else (None, a reason naming what failed).
    """
    if not content or not content.strip():
        return None, "the reply was empty"
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content.strip()
    # strict=False lets raw newlines and tabs stand inside strings, as grammar-constrained local
    # models (llama.cpp) write them; what the JSON says is still validated against the schema.
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as err:
        start, end = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[start : end + 1], strict=False) if 0 <= start < end else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            return None, f"the reply is not JSON ({err.msg} at line {err.lineno} column {err.colno})"
    try:
        return schema.model_validate(data), ""
    except ValidationError as err:
        return None, f"the JSON does not match the {schema.__name__} schema: {_describe(err)}"
