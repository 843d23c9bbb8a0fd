"""The reranker classes' shared shell: upstream's ``rank``/``predict`` API over the scoring engine.

:class:`TransformerReranker` is a ``torch.nn.Module`` (upstream's ``TorchModule``) holding a
:class:`~._engine.ScoringEngine` for one family. It implements the :class:`~mxbai_rerank.Scorer`
protocol the server, Ray and evaluation use, and upstream 0.1.6's ``_compute_scores``/``predict``
contract. ``MxbaiRerankV1`` and ``MxbaiRerankV2`` fix the family and add the model-level
surface upstream had (``forward``, ``prepare_inputs``, prompt attributes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ._chunking import Chunking, aggregate_windows, encode_chunked
from ._documents import Document, check_documents, check_query, documents_to_texts, normalize_rank_fields
from ._encoding import EncodedPairs
from ._engine import ModelLoadError, NonFiniteScoreError, ScoringEngine, split_kwargs
from ._engine._backends import Backend
from ._engine._loading import read_config
from ._registry import FAMILIES, RerankerFamily, detect_family, get_family, natural_family
from ._scorer import ScorerInfo
from .base import BaseReranker
from .utils import TorchModule

__all__ = ["NonFiniteScoreError", "RerankerOutput", "TransformerReranker"]

logger = logging.getLogger(__name__)

# ``max_length`` when the caller passes none at all: the family's default (``None`` and ``0``
# mean the model's whole window, as upstream).
FAMILY_DEFAULT: Any = object()


@dataclass
class RerankerOutput:
    """What the model-level ``forward`` returns (upstream 0.1.6's shape).

    ``logits``: (B,) raw scores; ``predictions``: (B,) 1 where ``sigmoid(logits) > 0.5``;
    ``loss``: binary cross-entropy with logits against ``labels``, when labels are given.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None


class TransformerReranker(BaseReranker, TorchModule):
    """A reranker of any registered family: ``TransformerReranker(path, family="mxbai-v2")``.

    Args:
        model_name_or_path: Hub name or local directory.
        family: Registered family name (or object); the subclasses fix it.
        device: ``"cuda"``, ``"cpu"``, ``"mps"``...; default: the best available.
        torch_dtype: Overrides the automatic choice (see the README, "dtype").
        max_length: Most tokens of query plus document; default: the family's (v2 8192, v1 the
            tokenizer's limit); ``None`` or ``0``: the model's whole window.
        tokenizer_kwargs: Passed to ``AutoTokenizer.from_pretrained``.
        disable_transformers_warnings: Set transformers' verbosity to errors only.
        max_batch_tokens: Padded tokens per forward pass (default: ``_registry.DEFAULT_MAX_BATCH_TOKENS``).
        backend: Engine backend name or object (default: ``"packed"`` on CUDA where a varlen
            attention kernel runs, else ``"torch"``).
        compile: ``torch.compile`` the decoder layers at load (packed backend only): 10-25 s
            once on a GPU, then about a third less GPU time per call (see the README, "On a GPU").
            Default ``None``: compile where calls run packed on CUDA, and run eagerly (with a
            warning) if compiling fails; ``False`` never compiles; ``True`` compiles or raises.
        estimated_max: For ``normalize=True`` in families that use it (v2); default: the config
            marker's value, else the known model's, else the family's.
        **kwargs: Hub keywords (``revision``, ``token``, ``cache_dir``, ``trust_remote_code``,
            ``local_files_only``...) go to config, model and tokenizer; the rest to the model's
            ``from_pretrained``.
    """

    family_name: ClassVar[str | None] = None

    def __init__(
        self,
        model_name_or_path: str,
        *,
        family: str | RerankerFamily | None = None,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        max_length: int | None = FAMILY_DEFAULT,
        tokenizer_kwargs: dict[str, Any] | None = None,
        disable_transformers_warnings: bool = False,
        max_batch_tokens: int | None = None,
        backend: str | Backend | None = None,
        estimated_max: float | None = None,
        compile: bool | None = None,
        **kwargs: Any,
    ) -> None:
        TorchModule.__init__(self)
        if disable_transformers_warnings:
            import transformers

            transformers.utils.logging.set_verbosity_error()
        self.model_name_or_path = str(model_name_or_path)
        hub_kwargs, _ = split_kwargs(kwargs)
        config = read_config(self.model_name_or_path, **hub_kwargs)
        if family is None and self.family_name is not None:
            # The class is the caller's choice of family: say so when the checkpoint is another,
            # and take the checkpoint's own where this class serves it (a converted v2, say).
            family = self._check_natural_family(config, get_family(self.family_name))
        chosen, spec = detect_family(self.model_name_or_path, config, family or self.family_name)
        self._family = chosen
        if max_length is FAMILY_DEFAULT:
            max_length = chosen.default_max_length
        self.engine = ScoringEngine(
            self.model_name_or_path,
            chosen,
            config=config,
            spec=spec,
            device=device,
            torch_dtype=torch_dtype,
            max_length=max_length,
            tokenizer_kwargs=tokenizer_kwargs,
            template_overrides=self._template_overrides(),
            backend=backend,
            max_batch_tokens=max_batch_tokens,
            compile=compile,
            **kwargs,
        )
        # ``model`` is a submodule, so ``.to()``, ``.parameters()`` and ``state_dict()`` see it. The
        # head shares the model's modules; it is kept outside ``_modules`` so that no weight is
        # listed twice in ``state_dict()``.
        self.model = self.engine.model
        self.__dict__["head"] = self.engine.head
        self.tokenizer = self.engine.tokenizer  # the caller's to use; the engine uses private copies
        self.cfg = self.engine.config
        self.max_length = self.engine.max_length
        self.estimated_max = self._resolve_estimated_max(estimated_max)
        self._dummy = torch.empty(0, device=self.engine.device, dtype=self.engine.dtype)

    def _check_natural_family(self, config: Any, forced: RerankerFamily) -> str | None:
        """The checkpoint's declared family where this class serves it (``None``: the class's
        own); a clear error when the class does not match the family the checkpoint declares."""
        natural = natural_family(self.model_name_or_path, config)
        if natural is None or natural == forced.name or natural not in FAMILIES:
            return None
        if FAMILIES[natural].reranker_class == forced.reranker_class:
            return natural  # a family derived from the class's own, e.g. mxbai-v2-seq-cls
        cls = FAMILIES[natural].reranker_class.rsplit(":", 1)[1]
        raise ModelLoadError(
            f"{self.model_name_or_path!r} is a {natural} reranker, not {forced.name}: use {cls} or mxbai_rerank.load()"
        )

    def _template_overrides(self) -> dict[str, Any]:
        """Prompt fields a subclass set on the class (v2: ``task_prompt``...); none by default."""
        return {}

    # -- the Scorer protocol --------------------------------------------------------------
    @property
    def family(self) -> str:
        """The registered family name, e.g. ``"mxbai-v2"``."""
        return self._family.name

    @property
    def max_batch_tokens(self) -> int:
        return self.engine.max_batch_tokens

    def encode_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        rank_fields: Sequence[str] | None = None,
        long_documents: str = "truncate",
        chunk_size: int | None = None,
        chunk_stride: int | None = None,
    ) -> EncodedPairs:
        """Token ids for ``(queries[i], documents[i])``, truncated as the model expects.

        With ``long_documents="chunk"`` a document that does not fit becomes several rows, one
        per window (``EncodedPairs.windows``); aggregate their raw scores with
        :func:`mxbai_rerank.aggregate_windows`.
        """
        chunking = Chunking.from_options(long_documents, chunk_size, chunk_stride)
        texts = self._texts(queries, documents, instruction, rank_fields)
        return self._encode_texts(list(queries), texts, instruction, chunking)

    @staticmethod
    def _texts(
        queries: Sequence[str], documents: Sequence[Document], instruction: str | None, rank_fields: object
    ) -> list[str]:
        """The checked inputs' scored texts (the one validation of a public call)."""
        if len(queries) != len(documents):
            raise ValueError(f"got {len(queries)} queries but {len(documents)} documents")
        for q in set(queries):
            check_query(q)
        if instruction is not None:
            check_query(instruction, "instruction")
        return documents_to_texts(check_documents(documents), normalize_rank_fields(rank_fields))

    def _encode_texts(
        self, queries: list[str], texts: list[str], instruction: str | None, chunking: Chunking | None
    ) -> EncodedPairs:
        if chunking is None:
            return self.engine.encode(queries, texts, instruction)
        return encode_chunked(self.engine.encoder, queries, texts, instruction, chunking)

    def score_encoded(
        self,
        encoded: EncodedPairs,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Raw head outputs (float32, input order) for already encoded pairs."""
        return self.engine.score(
            encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress
        )

    def postprocess(self, raw: np.ndarray, *, normalize: bool = False) -> np.ndarray:
        return self._family.postprocess(raw, normalize=normalize, estimated_max=self._estimated_max())

    def _resolve_estimated_max(self, explicit: float | None) -> float | None:
        """Explicit, else the config marker's, else the known model's, else the family's."""
        from ._registry import config_marker

        if explicit is not None:
            return float(explicit)
        marked = config_marker(self.cfg).get("estimated_max")
        if isinstance(marked, (int, float)) and not isinstance(marked, bool):
            return float(marked)
        spec = self.engine.spec
        if spec is not None and spec.estimated_max is not None:
            return spec.estimated_max
        return self._family.default_estimated_max

    def _estimated_max(self) -> float | None:
        return self.estimated_max

    def info(self) -> ScorerInfo:
        return ScorerInfo(
            model_id=self.model_name_or_path,
            family=self._family.name,
            device=str(self.engine.device),
            dtype=str(self.engine.dtype).removeprefix("torch."),
            max_length=self.engine.max_length,
            max_batch_tokens=self.engine.max_batch_tokens,
            backend=self.engine.backend.name,
        )

    def tokenizer_copy(self) -> Any:
        return self.engine.tokenizers.copy()

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
        long_documents: str = "truncate",
        chunk_size: int | None = None,
        chunk_stride: int | None = None,
        chunk_aggregate: str = "max",
    ) -> np.ndarray:
        """Scores for ``(queries[i], documents[i])`` in input order, as ``rank`` reports them."""
        chunking = Chunking.from_options(long_documents, chunk_size, chunk_stride, chunk_aggregate)
        texts = self._texts(queries, documents, instruction, rank_fields)
        scores, _ = self._score_texts(
            list(queries), texts, instruction, chunking,
            normalize=normalize, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress,
        )  # fmt: skip
        return scores

    def _score_texts(
        self,
        queries: list[str],
        texts: list[str],
        instruction: str | None,
        chunking: Chunking | None,
        *,
        normalize: bool,
        batch_size: int | None,
        max_batch_tokens: int | None,
        show_progress: bool,
    ) -> tuple[np.ndarray, list[tuple[int, int]] | None]:
        """Encode -> score -> (with chunking) aggregate windows -> post-process: one score per
        document, and with chunking each document's best-window span."""
        if chunking is None:
            raw = self.engine.encode_and_score(
                queries, texts, instruction,
                batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress,
            )  # fmt: skip
            return self.postprocess(raw, normalize=normalize), None
        encoded = self._encode_texts(queries, texts, instruction, chunking)
        raw = self.score_encoded(
            encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress
        )
        spans = None
        if encoded.windows is not None:
            raw, spans = aggregate_windows(raw, encoded.windows, chunking.aggregate)
        return self.postprocess(raw, normalize=normalize), spans

    # -- upstream contract ------------------------------------------------------------------
    def _scores_and_spans(
        self,
        *,
        queries: list[str],
        documents: list[str],
        batch_size: int | None,
        show_progress: bool,
        long_documents: str = "truncate",
        chunk_size: int | None = None,
        chunk_stride: int | None = None,
        chunk_aggregate: str = "max",
        **kwargs: Any,
    ) -> tuple[np.ndarray, list[tuple[int, int]] | None]:
        chunking = Chunking.from_options(long_documents, chunk_size, chunk_stride, chunk_aggregate)
        if chunking is None:
            return super()._scores_and_spans(
                queries=queries, documents=documents, batch_size=batch_size, show_progress=show_progress, **kwargs
            )
        normalize = bool(kwargs.pop("normalize", False))
        instruction = kwargs.pop("instruction", None)
        max_batch_tokens = kwargs.pop("max_batch_tokens", None)
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if instruction is not None:
            check_query(instruction, "instruction")
        return self._score_texts(
            list(queries), list(documents), instruction, chunking,
            normalize=normalize, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress,
        )  # fmt: skip

    def _compute_scores(
        self,
        *,
        queries: list[str],
        documents: list[str],
        batch_size: int | None,
        show_progress: bool,
        instruction: str | None = None,
        normalize: bool = False,
        max_batch_tokens: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Scores of text pairs (``_rank`` has validated the documents and made their texts)."""
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if not all(isinstance(d, str) for d in documents):
            raise TypeError("_compute_scores takes document texts; use rank() or score_pairs() for JSON objects")
        if instruction is not None:
            check_query(instruction, "instruction")
        scores, _ = self._score_texts(
            list(queries), list(documents), instruction, None,
            normalize=normalize, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress,
        )  # fmt: skip
        return scores

    def predict(self, queries: list[str], documents: list[str], **kwargs: Any) -> torch.Tensor:
        """Scores for the pairs as a float32 tensor (upstream's ``predict``)."""
        batch_size = kwargs.pop("batch_size", None)
        return torch.from_numpy(
            self._compute_scores(
                queries=queries, documents=documents, batch_size=batch_size, show_progress=False, **kwargs
            )
        )

    # -- upstream's model-level surface ---------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> RerankerOutput:
        """Raw scores of a tokenized batch (left or right padded), with gradients unless disabled.

        ``labels`` (0/1 or soft targets in [0, 1]) add a binary cross-entropy ``loss`` on the
        raw scores (upstream referenced a loss it never defined).
        """
        from ._batching import Batch

        batch = Batch.from_mask(input_ids, attention_mask, token_type_ids)
        logits = self.head(batch.to(self.engine.device))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.view(-1), labels.to(logits.device).float().view(-1)
            )
        predictions = (torch.sigmoid(logits) > 0.5).long()
        return RerankerOutput(loss=loss, logits=logits, predictions=predictions)

    def extra_repr(self) -> str:
        return f"model_name_or_path={self.model_name_or_path!r}, family={self.family}, device={self.device}"
