"""Tokenize and truncate (query, document) pairs into model-ready token id lists.

Tokenization is batched (one fast-tokenizer call per distinct text list, never one call
per pair) and guarded by a lock: a Hugging Face fast tokenizer is not safe to call from
several threads at once ("Already borrowed").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._registry import V2Prompt


@dataclass
class EncodedPairs:
    """Token ids of scored pairs, in input order, ready for :func:`~._batching.collate`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None = None
    # Pairs with the same group id share a query (and so a long token prefix); ``None``
    # means one group. Scoring may batch and cache prefixes per group.
    groups: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)

    def group_ids(self) -> list[int]:
        return self.groups if self.groups is not None else [0] * len(self.input_ids)

    def select(self, indices: Sequence[int]) -> EncodedPairs:
        return EncodedPairs(
            [self.input_ids[i] for i in indices],
            None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices],
            None if self.groups is None else [self.groups[i] for i in indices],
        )

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
        return EncodedPairs(ids, types, groups)


class LockedTokenizer:
    """A Hugging Face tokenizer that may be shared between threads."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        with self._lock:
            return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def pairs(self, first: list[str], second: list[str], max_length: int) -> dict[str, list[list[int]]]:
        with self._lock:
            return self.tokenizer(
                first, second, truncation=True, max_length=max_length, return_attention_mask=False
            ).data


class V2Encoder:
    """Builds the v2 prompt exactly as upstream 0.1.6 does, token for token.

    Per pair (all lengths in tokens)::

        q   = ids(["instruction: I" sep] "query: Q")[: max_length * 3 // 4]
        d   = ids("document: D")[: min(model_max_length - len(q) - fixed, max_length)]
        qd  = (q + ids(sep) + d)[: max_length]            # only the document side is cut
        ids = prefix + qd + ids(sep) + ids(task) + suffix

    where ``fixed`` is the length of the prefix, task prompt, suffix and one separator.
    """

    def __init__(self, tokenizer: LockedTokenizer, prompt: V2Prompt, max_length: int, model_max_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        prefix, sep, task, suffix, positive, negative = tokenizer.ids(
            [prompt.prefix, prompt.sep, prompt.task, prompt.suffix, prompt.positive_token, prompt.negative_token]
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
        text = self.prompt.query.format(query=query)
        if instruction:
            text = self.prompt.instruction.format(instruction=instruction) + self.prompt.sep + text
        return text

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None) -> EncodedPairs:
        distinct = list(dict.fromkeys(queries))
        query_cap = self.max_length * self.prompt.query_share_num // self.prompt.query_share_den
        query_ids = {
            q: ids[:query_cap]
            for q, ids in zip(distinct, self.tokenizer.ids([self.query_text(q, instruction) for q in distinct]))
        }
        doc_ids = self.tokenizer.ids([self.prompt.document.format(document=d) for d in documents])
        out: list[list[int]] = []
        for query, doc in zip(queries, doc_ids):
            q = query_ids[query]
            doc_cap = min(self.model_max_length - len(q) - self.fixed_length, self.max_length)
            pair = (q + self.sep_ids + doc[: max(doc_cap, 0)])[: self.max_length]
            out.append(self.prefix_ids + pair + self.tail_ids)
        group_of = {q: i for i, q in enumerate(distinct)}
        return EncodedPairs(out, groups=[group_of[q] for q in queries])


class V1Encoder:
    """The cross-encoder pair encoding: the tokenizer's own template and pair truncation."""

    def __init__(self, tokenizer: LockedTokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None) -> EncodedPairs:
        if instruction:
            raise ValueError("instruction is only supported by the v2 models; v1 cross-encoders score plain pairs")
        features = self.tokenizer.pairs(list(queries), list(documents), self.max_length)
        group_of = {q: i for i, q in enumerate(dict.fromkeys(queries))}
        return EncodedPairs(features["input_ids"], features.get("token_type_ids"), [group_of[q] for q in queries])
