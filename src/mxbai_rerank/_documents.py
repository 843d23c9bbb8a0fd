"""Documents as plain strings or JSON objects, and the text the model scores for each.

Rules (documented in the README):

* a ``str`` is scored as it is;
* an object with ``rank_fields`` of one path is scored as exactly that field's value
  (a string as is, anything else as compact JSON);
* an object with several ``rank_fields`` is scored as ``"<path>: <value>"`` lines in the
  order the fields were given;
* an object without ``rank_fields`` is scored as ``"<dotted.key>: <value>"`` lines, one per
  leaf, in the object's own key order (nested objects flattened with dots, lists of scalars
  joined by ``", "``, other lists as compact JSON).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

Document = Union[str, Mapping[str, Any]]  # noqa: UP007 - a runtime alias, evaluated on Python 3.10

_MISSING = object()


def check_documents(documents: object) -> list[Document]:
    """``documents`` as a list, or a ``TypeError`` naming what is wrong."""
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of strings or JSON objects, got {type(documents).__name__}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, (str, Mapping)):
            raise TypeError(f"documents[{i}] must be a str or a dict, got {type(doc).__name__}")
    return list(documents)


def check_query(query: object, name: str = "query") -> str:
    if not isinstance(query, str):
        raise TypeError(f"{name} must be a str, got {type(query).__name__}")
    return query


def normalize_rank_fields(rank_fields: object) -> list[str] | None:
    if rank_fields is None:
        return None
    if isinstance(rank_fields, str):
        rank_fields = [rank_fields]
    if not isinstance(rank_fields, Sequence) or not all(isinstance(f, str) and f for f in rank_fields):
        raise TypeError("rank_fields must be a list of non-empty field names (dotted paths allowed)")
    if not rank_fields:
        raise ValueError("rank_fields must name at least one field")
    return list(rank_fields)


def _is_index(part: str, size: int) -> bool:
    """An ASCII decimal list index below ``size`` ("²" is a digit to ``str.isdigit``, not an index)."""
    return part.isascii() and part.isdecimal() and int(part) < size


def lookup(obj: Any, path: str) -> Any:
    """The value at a dotted ``path``; an exact key containing dots wins over descending."""
    if isinstance(obj, Mapping) and path in obj:
        return obj[path]
    node = obj
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and _is_index(part, len(node)):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _leaves(obj: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(obj, Mapping):
        if not obj:
            return [(prefix, "{}")] if prefix else []
        out: list[tuple[str, str]] = []
        for key, value in obj.items():
            out.extend(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in obj):
        return [(prefix, ", ".join(_scalar_text(v) for v in obj))]
    return [(prefix, _scalar_text(obj))]


def object_text(obj: Mapping[str, Any]) -> str:
    """Readable, deterministic text for a JSON object (see the module docstring)."""
    return "\n".join(f"{key}: {value}" for key, value in _leaves(obj, ""))


def document_text(doc: Document, rank_fields: list[str] | None, index: int = 0) -> str:
    """The text the model scores for one document."""
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, Mapping):
        raise TypeError(f"documents[{index}] must be a str or a dict, got {type(doc).__name__}")
    if rank_fields is None:
        return object_text(doc)
    values = []
    for path in rank_fields:
        value = lookup(doc, path)
        if value is _MISSING:
            raise ValueError(f"rank_fields path {path!r} not found in documents[{index}]")
        values.append(value)
    if len(rank_fields) == 1:
        return _scalar_text(values[0])
    return "\n".join(f"{path}: {_scalar_text(value)}" for path, value in zip(rank_fields, values))


def documents_to_texts(documents: Sequence[Document], rank_fields: list[str] | None) -> list[str]:
    return [document_text(doc, rank_fields, i) for i, doc in enumerate(documents)]
