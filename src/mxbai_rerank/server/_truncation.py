"""Per-request document truncation: Cohere's ``max_tokens_per_doc`` and TEI's ``truncate`` options.

The model's own encoder always truncates from the right to its window. These helpers cut
document *texts* (at token boundaries, via the tokenizer's offsets) before encoding:

* ``max_tokens_per_doc=N`` keeps each document's first N tokens;
* TEI ``truncation_direction="Left"`` keeps the end of a document that does not fit;
* TEI ``truncate=false`` refuses a document that does not fit.

"Fits" is measured against the room the window leaves for the document next to the query
(template included). Token counts of a document alone and inside the prompt can differ by a
token at the boundary, so the cut is exact to within one token, which the encoder then trims.

A text is never tokenized whole: before tokenizing, it is cut by characters to the bound the
library's encoder uses (:data:`mxbai_rerank._encoding.CUT_SLACK_TOKENS`): no token spans more
than twice the longest vocabulary entry, and a character cut only changes the token(s) at the
cut, so the kept side's first (or last) ``max_tokens`` tokens are exactly those of the whole
text. A 2 MB document costs what its kept tokens cost.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._encoding import char_bound, longest_token_chars

if TYPE_CHECKING:
    from .._scorer import Scorer

__all__ = ["DocumentTruncator", "InputTooLongError"]


class InputTooLongError(ValueError):
    """A document does not fit the model's window and truncation was refused."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class DocumentTruncator:
    """Token-aware cuts of document texts for one scorer; safe to call from several threads."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        # A private copy (the scorer copies it under its own tokenizer lock): a fast tokenizer
        # must not be used by two threads at once, so this one is guarded by ``self._lock``.
        self._tokenizer = scorer.tokenizer_copy()
        self._lock = threading.Lock()
        self._longest_token_chars = longest_token_chars(self._tokenizer)
        filler = "word " * (scorer.info().max_length + 16)
        # The longest encoding the model produces: any pair that reaches it was truncated.
        self.window = len(scorer.encode_pairs(["q"], [filler]).input_ids[0])

    def char_bound(self, max_tokens: int) -> int:
        """Characters of a text that are enough to give its first (or last) ``max_tokens`` tokens."""
        return char_bound(max_tokens, self._longest_token_chars)

    def _offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        with self._lock:
            out = self._tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        return [list(map(tuple, offsets)) for offsets in out["offset_mapping"]]

    def room_for_document(self, query: str, instruction: str | None) -> int:
        """Document tokens that fit next to ``query`` in the model's window."""
        probe = self._scorer.encode_pairs([query], ["x"], instruction=instruction)
        base = len(probe.input_ids[0]) - 1  # "x" is one token
        return max(self.window - base, 0)

    def cut(self, texts: Sequence[str], max_tokens: int, *, keep: str = "start") -> list[str]:
        """Each text cut to at most ``max_tokens`` tokens, keeping its ``"start"`` or ``"end"``."""
        if max_tokens <= 0:
            return ["" for _ in texts]
        bound = self.char_bound(max_tokens)
        # The side that can survive, cut by characters first (see the module docstring).
        kept = [t if len(t) <= bound else (t[:bound] if keep == "start" else t[-bound:]) for t in texts]
        out = list(texts)
        for i, offsets in enumerate(self._offsets(kept)):
            if len(offsets) <= max_tokens:
                out[i] = kept[i]
            elif keep == "start":
                out[i] = kept[i][: offsets[max_tokens - 1][1]]
            else:
                out[i] = kept[i][offsets[len(offsets) - max_tokens][0] :]
        return out

    def check_fits(self, texts: Sequence[str], max_tokens: int, field: str) -> None:
        """Raise :class:`InputTooLongError` naming the first text longer than ``max_tokens`` tokens."""
        bound = self.char_bound(max_tokens)
        heads = [t[:bound] for t in texts]
        for i, offsets in enumerate(self._offsets(heads)):
            if len(offsets) > max_tokens:
                count = f"{len(offsets)}" if len(heads[i]) == len(texts[i]) else f"more than {max_tokens}"
                raise InputTooLongError(
                    f"{field}[{i}] has {count} tokens but only {max_tokens} fit in the model's window "
                    f"of {self.window} tokens next to the query; shorten it or send truncate=true",
                    i,
                )
