"""The shared fast path: tokenize and truncate -> token-budget batches -> backbone -> head.

:class:`TransformerReranker` loads a checkpoint, owns an encoder (``_encoding``) and a score
head (``_heads``), and implements upstream's ``_compute_scores``/``predict`` contract on top
of them. The family classes (v1, v2) only say which encoder, head and score transform.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ._batching import collate, common_prefix_length, plan_batches
from ._documents import Document, check_documents, check_query, documents_to_texts, normalize_rank_fields
from ._encoding import EncodedPairs, LockedTokenizer
from ._heads import ScoreHead
from ._registry import Family, ModelSpec, family_of_config, find_spec
from ._scorer import ScorerInfo
from ._runtime import (
    ModelLoadError,
    attention_implementation,
    quiet_transformers,
    read_config,
    resolve_device,
    resolve_dtype,
)
from .base import BaseReranker
from .utils import TorchModule

logger = logging.getLogger(__name__)

# Padded tokens per forward pass when the caller gives no budget. On CPU larger batches do not
# run faster and only cost memory; on a GPU they fill the device.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 8192, "cuda": 65536, "mps": 16384}
# Most share of a batch that may be padding. A CPU gains almost nothing from larger batches
# (throughput per token is flat from 512 to 8192 tokens), so it batches only near-equal
# lengths; a GPU trades some padding for fuller batches.
DEFAULT_MAX_PADDING = {"cpu": 0.1, "cuda": 0.3, "mps": 0.2}
# Below this many shared leading tokens a separate prefix pass saves nothing.
MIN_SHARED_PREFIX = 8


@dataclass
class _PrefixGroup:
    """Pairs scored together after one shared prefix (see ``_prefix_groups``)."""

    prefix: Any | None  # the head's state for the shared prefix, or None
    members: list[int]  # indices into the EncodedPairs
    sequences: list[list[int]]  # each member's tokens after the prefix
    token_type_ids: list[list[int]] | None


class NonFiniteScoreError(FloatingPointError):
    """The model produced NaN or infinity for some pair (usually a broken or overflowing checkpoint)."""


class TransformerReranker(BaseReranker, TorchModule):
    """Common loading and scoring for the Mixedbread rerankers."""

    family: ClassVar[Family]
    _auto_model_class: ClassVar[str]
    # Whether the architecture has SDPA / Flash Attention kernels in transformers.
    _supports_sdpa: ClassVar[bool] = True

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        max_length: int | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        disable_transformers_warnings: bool = False,
        max_batch_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        TorchModule.__init__(self)
        import transformers
        from transformers import AutoTokenizer

        if disable_transformers_warnings:
            transformers.utils.logging.set_verbosity_error()
        self.model_name_or_path = str(model_name_or_path)
        config_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "trust_remote_code") if k in kwargs}
        self.config = read_config(self.model_name_or_path, **config_kwargs)
        found = family_of_config(self.config)
        if found != self.family:
            hint = {"v1": "MxbaiRerankV1", "v2": "MxbaiRerankV2"}.get(found or "", "")
            what = f"a {found} reranker: use {hint} or mxbai_rerank.load()" if hint else "not a reranker model"
            raise ModelLoadError(
                f"{self.model_name_or_path!r} (architectures={getattr(self.config, 'architectures', None)}) is {what}"
            )
        self.spec: ModelSpec | None = find_spec(self.model_name_or_path, self.config)
        target = resolve_device(device)
        ckpt_dtype = getattr(self.config, "dtype", None) or getattr(self.config, "torch_dtype", None)
        dtype = resolve_dtype(torch_dtype, target, ckpt_dtype)
        auto_cls = getattr(transformers, self._auto_model_class)
        load_kwargs: dict[str, Any] = {"dtype": dtype}
        if self._supports_sdpa:
            load_kwargs["attn_implementation"] = attention_implementation(target, dtype)
        load_kwargs.update(kwargs)
        with quiet_transformers(enabled=True):
            try:
                self.model = auto_cls.from_pretrained(self.model_name_or_path, **load_kwargs)
                tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path, **(tokenizer_kwargs or {}))
            except OSError as exc:
                raise ModelLoadError(f"cannot load {self.model_name_or_path!r}: {exc}") from exc
        self.model.to(target).eval()
        self.tokenizer = tokenizer
        self._tokenizer = LockedTokenizer(tokenizer)
        self._dummy = torch.empty(0, device=target, dtype=dtype)
        self.max_batch_tokens = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS.get(target.type, 8192)
        self.max_padding = DEFAULT_MAX_PADDING.get(target.type, 0.2)
        self.pad_token_id = self._pad_id()
        self._setup(max_length)
        logger.info(
            "loaded %s (%s) on %s in %s with %s attention",
            self.model_name_or_path,
            self.family,
            target,
            dtype,
            load_kwargs.get("attn_implementation", "default"),
        )

    # -- family hooks -------------------------------------------------------------------
    def _setup(self, max_length: int | None) -> None:
        """Build ``self._encoder`` and ``self._head``."""
        raise NotImplementedError

    def _transform(self, raw: np.ndarray, *, normalize: bool) -> np.ndarray:
        """Head outputs -> the scores ``rank`` reports."""
        raise NotImplementedError

    _encoder: Any
    _head: ScoreHead

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return int(pad) if pad is not None else 0

    # -- the fast path ------------------------------------------------------------------
    def encode_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        rank_fields: Sequence[str] | None = None,
    ) -> EncodedPairs:
        """Token ids for ``(queries[i], documents[i])``, truncated as the model expects."""
        if len(queries) != len(documents):
            raise ValueError(f"got {len(queries)} queries but {len(documents)} documents")
        for q in set(queries):
            check_query(q)
        if instruction is not None:
            check_query(instruction, "instruction")
        texts = documents_to_texts(check_documents(documents), normalize_rank_fields(rank_fields))
        return self._encoder.encode(list(queries), texts, instruction)

    @torch.inference_mode()
    def score_encoded(
        self,
        encoded: EncodedPairs,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Raw head outputs (float32, input order) for already encoded pairs."""
        if len(encoded) == 0:
            return np.zeros(0, dtype=np.float32)
        budget = max_batch_tokens or self.max_batch_tokens
        plans = [
            (group, rows)
            for group in self._prefix_groups(encoded)
            for rows in plan_batches(
                [len(seq) for seq in group.sequences],
                max_tokens=budget,
                max_batch_size=batch_size or len(encoded),
                max_padding=self.max_padding,
            )
        ]
        scores = np.empty(len(encoded), dtype=np.float32)
        for group, rows in tqdm(plans, desc="Ranking", unit="batch", disable=not show_progress):
            types = None if group.token_type_ids is None else [group.token_type_ids[r] for r in rows]
            batch = collate([group.sequences[r] for r in rows], self.pad_token_id, types)
            scores[[group.members[r] for r in rows]] = self._head(batch.to(self.device), group.prefix).cpu().numpy()
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise NonFiniteScoreError(
                f"the model returned a non-finite score for {bad.size} pair(s), first at index {int(bad[0])}; "
                f"the checkpoint may be broken or overflow in {self.dtype} (try torch_dtype='float32')"
            )
        return scores

    def _prefix_groups(self, encoded: EncodedPairs) -> list[_PrefixGroup]:
        """Split pairs into groups batched separately, each with its shared prefix encoded once.

        Every v2 prompt starts with the same chat prefix, and pairs of one query with the same
        query too. On CPU, where larger batches gain nothing, pairs are grouped by query so the
        query joins the cached prefix; elsewhere all pairs form one group so batches stay full.
        """
        by_query = self.device.type == "cpu"
        members_of: dict[int, list[int]] = {}
        for i, group in enumerate(encoded.group_ids() if by_query else [0] * len(encoded)):
            members_of.setdefault(group, []).append(i)
        groups = []
        for members in members_of.values():
            sequences = [encoded.input_ids[i] for i in members]
            shared = common_prefix_length(sequences) if len(members) > 1 else 0
            prefix = (
                self._head.encode_prefix(sequences[0][:shared], self.device) if shared >= MIN_SHARED_PREFIX else None
            )
            if prefix is None:
                shared = 0
            types = None if encoded.token_type_ids is None else [encoded.token_type_ids[i][shared:] for i in members]
            groups.append(_PrefixGroup(prefix, members, [seq[shared:] for seq in sequences], types))
        return groups

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        normalize: bool = False,
        rank_fields: Sequence[str] | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Scores for ``(queries[i], documents[i])`` in input order, as ``rank`` reports them."""
        encoded = self.encode_pairs(queries, documents, instruction=instruction, rank_fields=rank_fields)
        raw = self.score_encoded(
            encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress
        )
        return self._transform(raw, normalize=normalize)

    # -- upstream contract --------------------------------------------------------------
    def _compute_scores(
        self,
        *,
        queries: list[str],
        documents: list[str],
        batch_size: int,
        show_progress: bool,
        instruction: str | None = None,
        normalize: bool = False,
        max_batch_tokens: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return self.score_pairs(
            queries,
            documents,
            instruction=instruction,
            normalize=normalize,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            show_progress=show_progress,
        )

    def predict(self, queries: list[str], documents: list[str], **kwargs: Any) -> torch.Tensor:
        """Scores for the pairs as a float32 tensor (upstream's ``predict``)."""
        batch_size = kwargs.pop("batch_size", None)
        return torch.from_numpy(
            self._compute_scores(
                queries=queries, documents=documents, batch_size=batch_size, show_progress=False, **kwargs
            )
        )

    # -- the Scorer protocol (see _scorer.py) ----------------------------------------------
    def postprocess(self, raw: np.ndarray, *, normalize: bool = False) -> np.ndarray:
        return self._transform(np.asarray(raw, dtype=np.float32), normalize=normalize)

    def info(self) -> ScorerInfo:
        return ScorerInfo(
            model_id=self.model_name_or_path,
            family=f"mxbai-{self.family}",
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            max_length=int(self.max_length),
            max_batch_tokens=int(self.max_batch_tokens),
            backend="torch",
        )

    def tokenizer_copy(self) -> Any:
        with self._tokenizer._lock:
            return copy.deepcopy(self._tokenizer.tokenizer)

    def extra_repr(self) -> str:
        return f"model_name_or_path={self.model_name_or_path!r}, device={self.device}, dtype={self.dtype}"
