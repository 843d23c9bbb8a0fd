"""Tokenize and truncate (query, document) pairs into model-ready token id lists.

* :class:`TokenizerPool` - private copies of the model's tokenizer, one per concurrent
  caller, so threads encode in parallel (a Hugging Face fast tokenizer must not be used by
  two threads at once: "Already borrowed"). The public ``reranker.tokenizer`` is never used
  by the engine, so a caller may use it freely.
* :class:`PromptTemplate` - a causal-LM reranker's prompt as data (the v2 template lives in
  :mod:`mxbai_rerank.families.mxbai_v2`).
* :class:`PromptPairEncoder` - pairs inside a prompt template, truncated exactly as upstream
  0.1.6 truncates the v2 models; :class:`TokenizerPairEncoder` - the tokenizer's own pair
  template and truncation (cross-encoders, v1).

Tokenization is batched: one fast-tokenizer call per distinct text list, never one per pair.
A long list is split into slices that threads encode at once (:meth:`TokenizerPool.ids`), since
the Rust tokenizer releases the GIL; this is what keeps tokenizing 100 documents (~20 ms on one
core) from delaying a GPU forward pass that takes a few tens of milliseconds.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "EncodedPairs",
    "PairEncoder",
    "PromptPairEncoder",
    "PromptTemplate",
    "TokenizerPairEncoder",
    "TokenizerPool",
]

# Text is cut by characters before tokenizing so that a huge document costs no more than
# the window keeps. The bound: no token spans more characters than the longest vocabulary
# entry (x2 for normalizers that merge characters), and a cut can only change the token(s)
# at the cut, so keeping ``(max_tokens + CUT_SLACK_TOKENS) * 2 * longest`` characters leaves
# the first ``max_tokens`` tokens exactly as the whole text would give them.
CUT_SLACK_TOKENS = 8

# Work per tokenizing thread at least: 16 texts, or 8192 characters (about 2,000 tokens of
# English) of fewer, longer texts (a smaller slice costs more in hand-offs than it saves); and
# threads at most (tokenizing is a fraction of a call: a few cores take it off the path).
MIN_TEXTS_PER_THREAD = 16
MIN_CHARS_PER_THREAD = 8192
MAX_TOKENIZE_THREADS = 8

_executor: tuple[int, ThreadPoolExecutor] | None = None
_executor_lock = threading.Lock()


def _tokenize_executor() -> ThreadPoolExecutor:
    """The process's tokenizing threads; a new pool in a forked child (the parent's threads are gone)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():
            workers = max(1, min(MAX_TOKENIZE_THREADS, os.cpu_count() or 1) - 1)  # the caller is one more
            _executor = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="mxbai-tokenize"))
        return _executor[1]


# Attributes that transformers 5 tokenizers of these classes keep after building their Rust
# tokenizer from them, and that no method reads again (checked against transformers 5.24: only
# each class's ``__init__`` names them). Qwen2's are its vocabulary and merge list as Python
# objects, 151,643 entries and 294,166 pairs: about 95 MB, two thirds of a loaded tokenizer.
_BUILD_ONLY_ATTRIBUTES = {"Qwen2Tokenizer": ("_vocab", "_merges"), "DebertaV2Tokenizer": ("_vocab",)}


def release_build_inputs(tokenizer: Any) -> None:
    """Drop the Python copies of the vocabulary (and merges) that a loaded tokenizer of a known
    class keeps only because its constructor built the Rust tokenizer from them: encoding,
    ``get_vocab``, ``len``, copying and ``save_pretrained`` all go through the Rust tokenizer.
    In place, before :class:`TokenizerPool` copies it; other tokenizers are left as they are."""
    names = _BUILD_ONLY_ATTRIBUTES.get(type(tokenizer).__name__, ())
    if getattr(tokenizer, "_tokenizer", None) is None:  # no Rust tokenizer: the Python data is the tokenizer
        return
    for name in names:
        if isinstance(getattr(tokenizer, name, None), (dict, list)):
            setattr(tokenizer, name, None)


def longest_token_chars(tokenizer: Any) -> int:
    """Characters of the tokenizer's longest vocabulary entry (128 when it has no vocabulary)."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return max((len(t) for t in vocab), default=128)


def char_bound(max_tokens: int, longest: int) -> int:
    """Characters of a text that are enough to give its first (or last) ``max_tokens`` tokens."""
    return (max(max_tokens, 0) + CUT_SLACK_TOKENS) * 2 * longest


@dataclass
class EncodedPairs:
    """Token ids of scored pairs, in input order, ready for :func:`~._batching.collate`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None = None
    # Pairs with the same group id share a query (and so a long token prefix); ``None``
    # means one group. A backend may batch and cache prefixes per group.
    groups: list[int] | None = None
    # With ``long_documents="chunk"``: per row, the window it holds, as
    # (document index, start char, end char) in the document's scored text; ``None``: one row
    # per document. Rows of one document are contiguous.
    windows: list[tuple[int, int, int]] | None = None

    def __len__(self) -> int:
        """Rows (pairs, or windows of pairs when chunked)."""
        return len(self.input_ids)

    @property
    def num_documents(self) -> int:
        return len(self.input_ids) if self.windows is None else (self.windows[-1][0] + 1 if self.windows else 0)

    @property
    def num_real_tokens(self) -> int:
        """Unpadded tokens of all pairs (a forward pass also spends padded positions)."""
        return sum(len(ids) for ids in self.input_ids)

    def group_ids(self) -> list[int]:
        return self.groups if self.groups is not None else [0] * len(self.input_ids)

    @staticmethod
    def concat(parts: Sequence[EncodedPairs]) -> EncodedPairs:
        """One set of pairs; each part's groups stay distinct from every other part's."""
        ids = [seq for part in parts for seq in part.input_ids]
        groups: list[int] = []
        for part in parts:
            offset = max(groups, default=-1) + 1
            groups.extend(offset + g for g in part.group_ids())
        types = None
        if all(part.token_type_ids is not None for part in parts):
            types = [seq for part in parts for seq in part.token_type_ids or []]
        windows = None
        if any(part.windows is not None for part in parts):
            windows, offset = [], 0
            for part in parts:
                # A part without windows has one row per document; its spans are not known here.
                rows = part.windows or [(i, 0, -1) for i in range(len(part))]
                windows.extend((offset + doc, start, end) for doc, start, end in rows)
                offset += part.num_documents
        return EncodedPairs(ids, types, groups, windows)


class TokenizerPool:
    """Private copies of a tokenizer: each borrower gets one no other thread is using.

    Copies are made on demand (one per peak concurrent caller) from a master copy that is
    never used for encoding, so copying never races with an encode call.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._master = copy.deepcopy(tokenizer)
        self._master_lock = threading.Lock()
        self._free: list[Any] = [self._quiet(copy.deepcopy(tokenizer))]
        self._free_lock = threading.Lock()
        self.max_idle = max(2, os.cpu_count() or 2)
        self.longest_token_chars = longest_token_chars(tokenizer)

    def copy(self) -> Any:
        """A new private copy for the caller to keep."""
        with self._master_lock:
            return copy.deepcopy(self._master)

    @staticmethod
    def _quiet(tokenizer: Any) -> Any:
        # The engine tokenizes whole documents (chunking, offsets) and truncates itself; the
        # tokenizer's "longer than the maximum" warning would only mislead.
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True
        return tokenizer

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        with self._free_lock:
            tokenizer = self._free.pop() if self._free else None
        if tokenizer is None:
            tokenizer = self._quiet(self.copy())
        try:
            yield tokenizer
        finally:
            with self._free_lock:
                if len(self._free) < self.max_idle:  # a burst of callers leaves at most this many copies
                    self._free.append(tokenizer)

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids (no special tokens), in order.

        A list of at least ``2 * MIN_TEXTS_PER_THREAD`` texts, or ``2 * MIN_CHARS_PER_THREAD``
        characters in two texts or more, is split into slices of about equal characters, encoded at
        once: the caller encodes the first, pool threads the others, all through the borrowed
        copy's Rust tokenizer (encoding only reads it, and the Rust call releases the GIL; no
        other thread holds this copy while it is borrowed).
        """
        if not texts:
            return []
        with self.borrow() as tok:
            backend = getattr(tok, "backend_tokenizer", None)  # None for a slow (Python) tokenizer
            cumulative = list(itertools.accumulate(len(t) for t in texts))
            total = cumulative[-1]
            work = max(len(texts) // MIN_TEXTS_PER_THREAD, total // MIN_CHARS_PER_THREAD)
            slices = min(len(texts), work, MAX_TOKENIZE_THREADS, os.cpu_count() or 1)
            if backend is None or slices < 2:
                return tok(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
            # The copy is ours alone: settle its state before threads read it concurrently.
            if backend.truncation is not None:
                backend.no_truncation()
            if backend.padding is not None:
                backend.no_padding()
            encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no offsets

            def encode(part: list[str]) -> list[list[int]]:
                return [e.ids for e in encode_batch(part, add_special_tokens=False)]

            # Slice ends where the running character count passes k/slices of the total: every
            # slice non-empty, in order.
            ends = {bisect.bisect_left(cumulative, total * i / slices) + 1 for i in range(1, slices)}
            bounds = sorted({0, len(texts)} | ends)
            executor = _tokenize_executor()
            futures = [executor.submit(encode, texts[a:b]) for a, b in itertools.pairwise(bounds[1:])]
            out = encode(texts[: bounds[1]])
            for future in futures:
                out.extend(future.result())
            return out

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as (start, end) character offsets (no special tokens)."""
        if not texts:
            return []
        with self.borrow() as tok:
            out = tok(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [[(int(a), int(b)) for a, b in row] for row in out]

    def pairs(self, first: list[str], second: list[str], max_length: int) -> dict[str, list[list[int]]]:
        with self.borrow() as tok:
            return tok(first, second, truncation=True, max_length=max_length, return_attention_mask=False).data

    def check_round_trip(self, text: str) -> None:
        """Raise ``ValueError`` when the tokenizer cannot encode and decode ``text`` (a missing vocabulary)."""
        with self.borrow() as tok:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            back = tok.decode(ids) if ids else ""
            unknown = tok.unk_token_id

        def letters(s: str) -> str:  # tokenizers may normalise case, spaces and punctuation
            return "".join(ch for ch in s.lower() if ch.isalnum())

        if not ids or all(i == unknown for i in ids) or letters(back) != letters(text):
            raise ValueError(
                f"the tokenizer does not round-trip a test string ({text!r} -> {len(ids)} tokens -> {back!r}); "
                "the model folder probably lacks its tokenizer files (tokenizer.json, vocab/merges)"
            )

    def cut(self, text: str, max_tokens: int) -> str:
        """``text`` without the characters that cannot survive truncation to ``max_tokens`` tokens."""
        limit = char_bound(max_tokens, self.longest_token_chars)
        return text if len(text) <= limit else text[:limit]


class PairEncoder(Protocol):
    """Turns pairs into token ids; ``max_length`` bounds query + document tokens."""

    max_length: int
    tokenizers: TokenizerPool

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None
    ) -> EncodedPairs: ...

    def document_room(self, query: str, instruction: str | None = None) -> int:
        """Tokens of a document's own text that fit next to ``query`` without truncation."""
        ...


@dataclass(frozen=True)
class PromptTemplate:
    """How a (query, document) pair becomes one causal-LM prompt.

    Layout (token level)::

        prefix | [instruction sep] query | sep document | sep task suffix

    and the score is ``logit(positive_token) - logit(negative_token)`` at the last position.
    """

    prefix: str
    suffix: str
    sep: str
    instruction: str  # with an ``{instruction}`` field
    query: str  # with a ``{query}`` field
    document: str  # with a ``{document}`` field
    task: str
    positive_token: str
    negative_token: str
    # The query part (with its instruction line) may take at most this share of max_length.
    query_share: tuple[int, int] = (3, 4)


class PromptPairEncoder:
    """Builds a causal-LM reranker prompt exactly as upstream 0.1.6 does, token for token.

    Per pair (all lengths in tokens)::

        q   = ids(["instruction: I" sep] "query: Q")[: max_length * 3 // 4]
        d   = ids("document: D")[: min(model_max_length - len(q) - fixed, max_length)]
        qd  = (q + ids(sep) + d)[: max_length]            # only the document side is cut
        ids = prefix + qd + ids(sep) + ids(task) + suffix

    where ``fixed`` is the length of the prefix, task prompt, suffix and one separator.
    """

    def __init__(self, tokenizers: TokenizerPool, template: PromptTemplate, max_length: int, model_max_length: int):
        self.tokenizers = tokenizers
        self.template = template
        prefix, sep, task, suffix, positive, negative = tokenizers.ids(
            [template.prefix, template.sep, template.task, template.suffix, template.positive_token,
             template.negative_token]
        )  # fmt: skip
        if len(positive) != 1 or len(negative) != 1 or positive == negative:
            raise ValueError(
                f"the tokenizer must encode the answer tokens {template.positive_token!r} and "
                f"{template.negative_token!r} as two distinct single tokens, got {positive} and {negative}"
            )
        self.prefix_ids: list[int] = prefix
        self.sep_ids: list[int] = sep
        self.tail_ids: list[int] = sep + task + suffix
        self.positive_id: int = positive[0]
        self.negative_id: int = negative[0]
        self.fixed_length = len(prefix) + len(task) + len(suffix) + len(sep)
        self.model_max_length = model_max_length
        # The template must fit: shrink the pair budget rather than overflow the model.
        self.max_length = min(max_length, model_max_length - self.fixed_length)
        if self.max_length <= 0:
            raise ValueError(f"max_length={max_length} leaves no room for the prompt template")

    def query_text(self, query: str, instruction: str | None) -> str:
        text = self.template.query.format(query=query)
        if instruction:
            text = self.template.instruction.format(instruction=instruction) + self.template.sep + text
        return text

    def document_room(self, query: str, instruction: str | None = None) -> int:
        num, den = self.template.query_share
        q = len(self.tokenizers.ids([self.tokenizers.cut(self.query_text(query, instruction), self.max_length)])[0])
        q = min(q, self.max_length * num // den)
        room = min(self.max_length - q - len(self.sep_ids), self.model_max_length - q - self.fixed_length)
        label = len(self.tokenizers.ids([self.template.document.format(document="")])[0])
        # One token of slack: the label and the text may merge into one token at their boundary.
        return max(room - label - 1, 0)

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None) -> EncodedPairs:
        distinct = list(dict.fromkeys(queries))
        num, den = self.template.query_share
        query_cap = self.max_length * num // den
        query_texts = [self.tokenizers.cut(self.query_text(q, instruction), query_cap) for q in distinct]
        query_ids = {q: ids[:query_cap] for q, ids in zip(distinct, self.tokenizers.ids(query_texts))}
        doc_texts = [self.tokenizers.cut(self.template.document.format(document=d), self.max_length) for d in documents]
        doc_ids = self.tokenizers.ids(doc_texts)
        out: list[list[int]] = []
        for query, doc in zip(queries, doc_ids):
            q = query_ids[query]
            doc_cap = min(self.model_max_length - len(q) - self.fixed_length, self.max_length)
            pair = (q + self.sep_ids + doc[: max(doc_cap, 0)])[: self.max_length]
            out.append(self.prefix_ids + pair + self.tail_ids)
        group_of = {q: i for i, q in enumerate(distinct)}
        return EncodedPairs(out, groups=[group_of[q] for q in queries])


class TokenizerPairEncoder:
    """The cross-encoder pair encoding: the tokenizer's own template and pair truncation."""

    def __init__(self, tokenizers: TokenizerPool, max_length: int) -> None:
        self.tokenizers = tokenizers
        self.max_length = max_length

    def document_room(self, query: str, instruction: str | None = None) -> int:
        with self.tokenizers.borrow() as tok:
            specials = tok.num_special_tokens_to_add(pair=True)
        q = len(self.tokenizers.ids([self.tokenizers.cut(query, self.max_length)])[0])
        # Pair truncation cuts the longer side first, so a long query leaves the document
        # at least half of the room.
        budget = self.max_length - specials
        return max(budget - q, budget // 2, 0) if q > budget // 2 else max(budget - q, 0)

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None) -> EncodedPairs:
        if instruction:
            raise ValueError("instruction is only supported by the v2 models; v1 cross-encoders score plain pairs")
        features = self.tokenizers.pairs(
            [self.tokenizers.cut(q, self.max_length) for q in queries],
            [self.tokenizers.cut(d, self.max_length) for d in documents],
            self.max_length,
        )
        group_of = {q: i for i, q in enumerate(dict.fromkeys(queries))}
        return EncodedPairs(features["input_ids"], features.get("token_type_ids"), [group_of[q] for q in queries])
