"""Documents longer than the window: overlapping token windows, scored together, aggregated.

``long_documents="chunk"`` replaces every document whose tokens do not fit next to the query
(or exceed ``chunk_size``, when given) by windows of at most ``size`` tokens whose starts are
``stride`` tokens apart (cut on token boundaries, and on a sentence boundary where one lies in
the window's last half). A document
that fits stays one row, token for token as with ``"truncate"``. All rows of a call are scored
in the same batched pass; a document's raw score is then the ``max`` (default), ``first`` or
``mean`` of its windows' raw scores, and its span is the best window's character range in the
document's scored text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._encoding import EncodedPairs, PairEncoder

__all__ = [
    "AGGREGATES",
    "LONG_DOCUMENTS",
    "Chunking",
    "aggregate_windows",
    "encode_chunked",
    "per_document",
    "plan_windows",
    "split_options",
]

LONG_DOCUMENTS = ("truncate", "chunk")
AGGREGATES = ("max", "first", "mean")
_SENTENCE_END = ".!?。！？\n"


@dataclass(frozen=True)
class Chunking:
    """How long documents are split: ``size`` and ``stride`` in document tokens (``None``: the
    room next to the query, and three quarters of the size), ``aggregate`` over windows."""

    size: int | None = None
    stride: int | None = None
    aggregate: str = "max"

    def __post_init__(self) -> None:
        for name in ("size", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"chunk_{name} must be a positive number of tokens, got {value!r}")
        if self.size is not None and self.stride is not None and self.stride >= self.size:
            raise ValueError(
                f"chunk_stride ({self.stride}) must be smaller than chunk_size ({self.size}) so that windows overlap"
            )
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"chunk_aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")

    @staticmethod
    def from_options(
        long_documents: str = "truncate",
        chunk_size: int | None = None,
        chunk_stride: int | None = None,
        chunk_aggregate: str = "max",
    ) -> Chunking | None:
        """The chunking the ``rank`` options ask for, or ``None`` for plain truncation."""
        if long_documents not in LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be 'truncate' or 'chunk', got {long_documents!r}")
        if long_documents == "truncate":
            if chunk_size is not None or chunk_stride is not None or chunk_aggregate != "max":
                raise ValueError("chunk_size, chunk_stride and chunk_aggregate need long_documents='chunk'")
            return None
        return Chunking(chunk_size, chunk_stride, chunk_aggregate)


def plan_windows(text: str, offsets: Sequence[tuple[int, int]], size: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) character ranges of overlapping windows of at most ``size`` tokens.

    Invariants: the first window starts at the first token and the last ends at the last; each
    window starts and ends after the previous one, overlaps it, and holds at most ``size`` tokens.
    """
    n = len(offsets)
    if n <= size:
        return [(0, len(text))]
    ends_sentence = [text[b - 1 : b] in _SENTENCE_END or text[b : b + 1] == "\n" for _, b in offsets]
    windows: list[tuple[int, int]] = []
    start, prev_end = 0, 0
    while True:
        end = min(start + size, n)  # token range [start, end)
        if end < n:
            # A sentence end in the window's last half, and past the previous window's end.
            for k in range(end - 1, max(start + size // 2, prev_end) - 1, -1):
                if ends_sentence[k]:
                    end = k + 1
                    break
        first, last = offsets[start][0], offsets[end - 1][1]
        while first < last and text[first].isspace():  # a window is its visible characters
            first += 1
        while last > first and text[last - 1].isspace():
            last -= 1
        windows.append((first, last))
        if end >= n:
            return windows
        nxt = min(start + stride, end - 1)  # windows overlap by at least one token
        for k in range(nxt, max(start, nxt - stride // 2), -1):  # start just after a sentence end
            if ends_sentence[k - 1]:
                nxt = k
                break
        start, prev_end = max(nxt, start + 1), end


def encode_chunked(
    encoder: PairEncoder,
    queries: Sequence[str],
    texts: Sequence[str],
    instruction: str | None,
    chunking: Chunking,
) -> EncodedPairs:
    """Rows for every window of every document (see the module docstring)."""
    rooms = {q: encoder.document_room(q, instruction) for q in dict.fromkeys(queries)}
    offsets = encoder.tokenizers.offsets(list(texts))  # whole documents: every part gets a window
    row_queries: list[str] = []
    row_texts: list[str] = []
    windows: list[tuple[int, int, int]] = []
    for doc, (query, text, offs) in enumerate(zip(queries, texts, offsets)):
        room = rooms[query]
        if room <= 0:
            raise ValueError(f"the query leaves no room for document tokens in the window of {encoder.max_length}")
        if chunking.size is not None and chunking.size > room:
            raise ValueError(
                f"chunk_size={chunking.size} does not fit next to the query: at most {room} document tokens fit "
                f"in max_length={encoder.max_length}"
            )
        size = chunking.size or room
        stride = chunking.stride or max(size * 3 // 4, 1)
        if stride >= size:
            raise ValueError(f"chunk_stride ({stride}) must be smaller than the window of {size} tokens")
        # A document that fits (in the room, or in the window size the caller asked for) stays
        # one row, exactly as with truncation.
        spans = [(0, len(text))] if len(offs) <= size else plan_windows(text, offs, size, stride)
        for start, end in spans:
            row_queries.append(query)
            row_texts.append(text[start:end])
            windows.append((doc, start, end))
    encoded = encoder.encode(row_queries, row_texts, instruction)
    encoded.windows = windows
    return encoded


def aggregate_windows(
    raw: np.ndarray, windows: Sequence[tuple[int, int, int]], how: str = "max"
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per-document raw scores and best-window spans from per-window raw scores.

    ``max``: the best window; ``first``: the first window (the truncated document's
    neighbourhood); ``mean``: the average over windows. The span is always the best window's.
    """
    if how not in AGGREGATES:
        raise ValueError(f"chunk_aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    num_docs = windows[-1][0] + 1 if windows else 0
    scores = np.empty(num_docs, dtype=np.float32)
    spans: list[tuple[int, int]] = []
    row = 0
    for doc in range(num_docs):
        first = row
        while row < len(windows) and windows[row][0] == doc:
            row += 1
        values = raw[first:row]
        best = first + int(np.argmax(values))
        spans.append((windows[best][1], windows[best][2]))
        scores[doc] = values.max() if how == "max" else values[0] if how == "first" else values.mean()
    return scores, spans


def split_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Rank-style long-document options -> (``encode_pairs`` keywords, aggregate).

    The keywords are empty for plain truncation, so a ``Scorer`` that knows no chunking still
    works. The values are not checked here: ``encode_pairs`` checks them.
    """
    encode = dict(options or {})
    aggregate = encode.pop("chunk_aggregate", "max")
    if encode.get("long_documents", "truncate") == "truncate":
        encode = {}
    return encode, aggregate


def per_document(raw: np.ndarray, encoded: EncodedPairs, aggregate: str = "max") -> np.ndarray:
    """One raw score per document: the windows' aggregate where ``encoded``'s rows are windows."""
    return raw if encoded.windows is None else aggregate_windows(raw, encoded.windows, aggregate)[0]
