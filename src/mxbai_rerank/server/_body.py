"""Strict parsing of a rerank request body, before any schema validation.

The body must be UTF-8 JSON (whatever the ``Content-Type`` says) in the strict sense that
text-embeddings-inference's parser applies: no ``NaN``/``Infinity`` and no number beyond the
range of a double (``1e400``), nesting at most :data:`MAX_DEPTH` levels. Every string must be
valid Unicode text (no lone surrogate such as ``"\\ud800"``) and at most ``max_text_chars``
characters long. Each failure is an :class:`~._errors.ApiError` whose ``param`` is the JSON
path of the offending value (``input[3].meta.year``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ._errors import ApiError

__all__ = ["MAX_DEPTH", "parse_body"]

# Deepest nesting of arrays and objects accepted (serde_json's default recursion limit, as in TEI).
MAX_DEPTH = 128
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadNumber:
    """A number literal the strict grammar refuses; replaced by an error naming its path."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _parse_float(literal: str) -> float | _BadNumber:
    value = float(literal)
    return value if math.isfinite(value) else _BadNumber(literal)


def _parse_int(literal: str) -> int | _BadNumber:
    # More than 309 digits cannot be a finite double; float() of the literal decides cheaply
    # (int() would refuse past 4300 digits with an exception naming no field).
    if len(literal) > 309 and not math.isfinite(float(literal)):
        return _BadNumber(literal)
    return int(literal)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _shown(literal: str) -> str:
    return literal if len(literal) <= 24 else f"{literal[:12]}...({len(literal)} characters)"


def _check(root: Any, max_text_chars: int) -> None:
    """Raise for the first bad value in document order (iterative: no recursion limit)."""
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        where = path or "body"
        if isinstance(value, str):
            if len(value) > max_text_chars:
                raise ApiError(
                    413,
                    f"{where} has {len(value)} characters; this server accepts at most {max_text_chars} per text "
                    "(--max-text-chars)",
                    param=where,
                )
            if (bad := _SURROGATE.search(value)) is not None:
                raise ApiError(
                    400,
                    f"{where} contains a lone surrogate (U+{ord(bad.group()):04X} at character {bad.start()}), "
                    "which is not valid Unicode text",
                    param=where,
                )
        elif isinstance(value, _BadNumber):
            raise ApiError(
                400,
                f"{where}: {_shown(value.literal)} is not a valid JSON number "
                "(NaN, Infinity and numbers beyond the range of a double are not accepted)",
                param=where,
            )
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ApiError(400, f"{where}: JSON nested deeper than {MAX_DEPTH} levels", param=where)
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
            for key, child in reversed(items):
                if isinstance(key, str) and (bad := _SURROGATE.search(key)) is not None:
                    raise ApiError(
                        400, f"{where} has a key with a lone surrogate (U+{ord(bad.group()):04X})", param=where
                    )
                stack.append((child, _child(path, key), depth + 1))


def parse_body(body: bytes, *, max_text_chars: int) -> Any:
    """The JSON value of ``body``, or an :class:`~._errors.ApiError` (400 or 413) naming the fault."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON") from exc
    try:
        value = json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_BadNumber)
    except RecursionError as exc:
        raise ApiError(400, f"request body is JSON nested deeper than {MAX_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    _check(value, max_text_chars)
    return value
