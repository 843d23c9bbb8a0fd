"""The scoring engine: one family-agnostic pipeline from a checkpoint to raw scores.

    load:   config -> family (strict) -> device, dtype, backend kwargs -> model, tokenizer
            -> tokenizer pool (checked) -> encoder and head from the family
    score:  encode (any thread) -> backend.run (batches -> head; serialised) -> finite check
            (encode_and_score: the same, tokenizing slice k + 1 while the device runs slice k,
            where the backend streams)

The engine knows no family: what differs between v1 and v2 comes from the
:class:`~mxbai_rerank.families.RerankerFamily` and the head it builds. How the model is loaded
and run can be changed through a :class:`~._backends.Backend`.

Concurrency: ``encode`` runs in parallel on any number of threads (each borrows its own
tokenizer copy); ``score`` holds one lock around the forward passes, so concurrent callers
take turns and together never hold more than one token budget of activations.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._encoding import EncodedPairs, PairEncoder, TokenizerPool, release_build_inputs
from .._heads import ScoreHead
from .._registry import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_PADDING, ModelSpec
from ..families import RerankerFamily
from ._backends import Backend, get_backend
from ._loading import ModelLoadError, quiet_transformers, read_config, resolve_device, resolve_dtype

__all__ = [
    "HUB_KWARGS",
    "STREAM_CHARS",
    "STREAM_PAIRS",
    "ModelLoadError",
    "NonFiniteScoreError",
    "ScoringEngine",
    "stream_slices",
]

logger = logging.getLogger(__name__)

# Keywords that say where a checkpoint comes from: they go to the config, the model and the
# tokenizer alike.
HUB_KWARGS = ("revision", "token", "cache_dir", "trust_remote_code", "local_files_only", "subfolder", "proxies")

# Most pairs, and characters, per slice where encoding overlaps the device's work (a backend
# whose ``streams(engine)`` is true, with a ``launch`` that does not wait for the device): while
# the device runs a slice, the host tokenizes the next and enqueues it.
# On an H200 host (base shape, compiled) enqueueing a pass takes about 20 ms and tokenizing about
# 0.1 ms per 700 characters, while the device needs about 0.4 ms a pair of 170 tokens: slices of
# 256 pairs or 200,000 characters (about 50,000 tokens) keep the device busy from the second
# slice on, and a top-100 query of short passages stays one slice.
STREAM_PAIRS = 256
STREAM_CHARS = 200_000


def stream_slices(queries: list[str], documents: list[str]) -> list[tuple[int, int]]:
    """(start, end) slices of the pairs, in order: each at most :data:`STREAM_PAIRS` pairs, and
    ending at the first pair that brings it to :data:`STREAM_CHARS` characters (so a pair longer
    than that forms a slice alone)."""
    slices: list[tuple[int, int]] = []
    start, chars = 0, 0
    for i, (query, document) in enumerate(zip(queries, documents)):
        chars += len(query) + len(document)
        if i + 1 - start >= STREAM_PAIRS or chars >= STREAM_CHARS:
            slices.append((start, i + 1))
            start, chars = i + 1, 0
    if start < len(queries):
        slices.append((start, len(queries)))
    return slices


# A test string every tokenizer must encode and decode back (a folder without tokenizer
# files yields an empty vocabulary that encodes nothing).
_ROUND_TRIP = "query: Who wrote 'To Kill a Mockingbird'? document: Harper Lee, 1960."


class NonFiniteScoreError(FloatingPointError):
    """The model produced NaN or infinity for some pair (usually a broken or overflowing checkpoint)."""


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` -> (hub keywords for config, model and tokenizer; the rest, for the model only)."""
    hub = {k: v for k, v in kwargs.items() if k in HUB_KWARGS}
    return hub, {k: v for k, v in kwargs.items() if k not in HUB_KWARGS}


class ScoringEngine:
    """A loaded model with its family's encoder and head (see the module docstring).

    Attributes: ``config``, ``model`` (the transformers model), ``tokenizer`` (the public
    tokenizer, never used by the engine), ``tokenizers`` (the engine's private pool),
    ``encoder``, ``head``, ``backend``, ``family``, ``spec`` (the known model, if any),
    ``max_batch_tokens`` and ``max_padding`` (for the device the model is on now),
    ``pad_token_id``, ``compiled`` (the backend compiled the model at load: ``compile=True``, or
    ``compile=None`` on CUDA where calls run packed; see :meth:`~._packed.PackedBackend.compile`).
    """

    def __init__(
        self,
        model_id: str,
        family: RerankerFamily,
        *,
        config: Any | None = None,
        spec: ModelSpec | None = None,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        max_length: int | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        template_overrides: dict[str, Any] | None = None,
        backend: str | Backend | None = None,
        max_batch_tokens: int | None = None,
        compile: bool | None = None,
        **kwargs: Any,
    ) -> None:
        import transformers
        from transformers import AutoTokenizer

        if max_length is not None and (isinstance(max_length, bool) or max_length < 0):
            raise ValueError(f"max_length must be a positive number of tokens (or None), got {max_length!r}")
        if max_batch_tokens is not None and max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens!r}")
        hub_kwargs, model_kwargs = split_kwargs(kwargs)
        self.model_id = str(model_id)
        self.family = family
        self.spec = spec
        self.config = config if config is not None else read_config(self.model_id, **hub_kwargs)
        family.check_config(self.config)
        target = resolve_device(device)
        ckpt_dtype = getattr(self.config, "dtype", None) or getattr(self.config, "torch_dtype", None)
        dtype = resolve_dtype(torch_dtype, target, ckpt_dtype)
        onnx_folder = _is_onnx_folder(self.model_id, hub_kwargs)
        if backend is None and onnx_folder:
            backend = "onnx"  # a folder written by `convert --to onnx` holds a graph, not torch weights
        self.backend = get_backend(backend, target, dtype)
        load_kwargs: dict[str, Any] = {"dtype": dtype, **self.backend.model_kwargs(target, dtype, family)}
        load_kwargs.update(hub_kwargs)
        load_kwargs.update(model_kwargs)
        auto_cls = getattr(transformers, family.auto_model_class)
        # Optional backend hook ``load_head(engine, device, hub_kwargs) -> ScoreHead``: the backend
        # scores without the transformers model (an ONNX graph), so only the tokenizer is loaded
        # here and the backend's head is also the engine's ``model``.
        load_head = getattr(self.backend, "load_head", None)
        if load_head is None and onnx_folder:
            raise ModelLoadError(
                f"{self.model_id!r} holds an ONNX graph (mxbai-rerank convert --to onnx), not torch weights: "
                "load it with backend='onnx' or 'onnx-int8' (or no backend)"
            )
        self.template_overrides = dict(template_overrides or {})
        model: Any = None
        loading: dict[str, Any] = {}
        with quiet_transformers(enabled=True):
            try:
                if load_head is None:
                    model, loading = auto_cls.from_pretrained(
                        self.model_id, config=self.config, output_loading_info=True, **load_kwargs
                    )
                tokenizer = AutoTokenizer.from_pretrained(self.model_id, **{**hub_kwargs, **(tokenizer_kwargs or {})})
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load {self.model_id!r}: {' '.join(str(exc).split())}") from exc
        if loading.get("missing_keys"):
            # Randomly initialised weights score nonsense; say so rather than rank silently.
            logger.warning(
                "%s: weights missing from the checkpoint were randomly initialised: %s",
                self.model_id,
                ", ".join(sorted(loading["missing_keys"])[:8]),
            )
        if model is not None:
            self.model: torch.nn.Module = model.to(target).eval()
        release_build_inputs(tokenizer)  # about 95 MB for a Qwen2 tokenizer, before the pool copies it
        self.tokenizer = tokenizer
        self.tokenizers = TokenizerPool(tokenizer)
        try:
            self.tokenizers.check_round_trip(_ROUND_TRIP)
            self.encoder: PairEncoder = family.build_encoder(
                self.tokenizers, self.config, max_length, dict(template_overrides or {})
            )
        except ValueError as exc:
            raise ModelLoadError(f"cannot use the tokenizer of {self.model_id!r}: {exc}") from exc
        if load_head is not None:
            self.head: ScoreHead = load_head(self, target, hub_kwargs)
            self.model = self.head.eval()
        else:
            self.head = family.build_head(self.model, self.encoder)
        self._max_batch_tokens = max_batch_tokens
        self.pad_token_id = _pad_id(tokenizer)
        self._forward_lock = threading.Lock()
        self.backend.prepare(self)
        self.compiled = False
        if compile is None:  # automatic: only where it pays (packed calls on a GPU)
            self._compile_if_it_pays()
        elif compile:
            compile_hook = getattr(self.backend, "compile", None)
            if compile_hook is None:
                raise ValueError(
                    f"compile=True: the {self.backend.name!r} backend cannot compile; use backend='packed'"
                )
            compile_hook(self)
            self.compiled = True
        logger.info(
            "loaded %s (%s) on %s in %s with the %s backend (%s attention)",
            self.model_id,
            family.name,
            target,
            dtype,
            self.backend.name,
            load_kwargs.get("attn_implementation", "default"),
        )

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return torch.device("cpu") if param is None else param.device  # a backend's graph runs on the CPU

    @property
    def dtype(self) -> torch.dtype:
        # Declared by a backend that computes in another dtype than its first weights' (the int8
        # backend keeps a checkpoint's bf16 embeddings in a float32 engine), or by a backend's
        # graph (e.g. int8 weights); else the model's.
        for declared in (getattr(self.backend, "compute_dtype", None), getattr(self.head, "weight_dtype", None)):
            if isinstance(declared, torch.dtype):
                return declared
        return next(self.model.parameters()).dtype

    @property
    def max_batch_tokens(self) -> int:
        """The padded-token budget of a forward pass: the caller's, else the backend's default
        (``default_max_batch_tokens``, optional), else the current device's default."""
        return int(
            self._max_batch_tokens
            or getattr(self.backend, "default_max_batch_tokens", None)
            or DEFAULT_MAX_BATCH_TOKENS.get(self.device.type, DEFAULT_MAX_BATCH_TOKENS["cpu"])
        )

    @property
    def max_padding(self) -> float:
        """Most share of a batch that may be padding, on the current device."""
        return DEFAULT_MAX_PADDING.get(self.device.type, DEFAULT_MAX_PADDING["cpu"])

    @property
    def max_length(self) -> int:
        return int(self.encoder.max_length)

    def _compile_if_it_pays(self) -> None:
        """``compile=None``: compile where the backend says it pays (the packed backend: packed
        calls on CUDA; on an H200 a cold top-100 query's GPU time fell from 56.8 to 36-37 ms, for
        10-25 s once at load); when compiling fails there (no Triton, an unsupported GPU), run
        eagerly and say why."""
        pays = getattr(self.backend, "compile_pays", None)
        compile_hook = getattr(self.backend, "compile", None)
        if pays is None or compile_hook is None or not pays(self):
            return
        try:
            compile_hook(self)
        except Exception as exc:  # the automatic choice must never make a model unusable: say so, run eagerly
            logger.warning("%s: compiling failed (%s); running eagerly (pass compile=False to skip)",
                           self.model_id, " ".join(str(exc).split())[:300])  # fmt: skip
            return
        self.compiled = True

    def encode(self, queries: list[str], documents: list[str], instruction: str | None = None) -> EncodedPairs:
        """Token ids of validated text pairs; thread-safe and parallel."""
        return self.encoder.encode(queries, documents, instruction)

    def score(
        self,
        encoded: EncodedPairs,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """(N,) float32 raw scores in input order; raises :class:`NonFiniteScoreError`."""
        if len(encoded) == 0:
            return np.zeros(0, dtype=np.float32)
        _check_budgets(batch_size, max_batch_tokens)
        with self._forward():
            scores = self.backend.run(
                self,
                encoded,
                max_batch_tokens=max_batch_tokens or self.max_batch_tokens,
                batch_size=batch_size or len(encoded),
                show_progress=show_progress,
            )
        return self._checked(scores)

    def encode_and_score(
        self,
        queries: list[str],
        documents: list[str],
        instruction: str | None = None,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """:meth:`encode` then :meth:`score`, overlapped where the backend streams (packed calls
        on CUDA): slices (:func:`stream_slices`), each tokenized while the device runs the
        previous one, with one synchronisation at the end. Same scores either way: a pair's
        tokens and its packed forward pass do not depend on its neighbours."""
        streams = getattr(self.backend, "streams", None)
        slices = stream_slices(queries, documents) if streams is not None else []
        if len(slices) < 2 or not streams(self):  # type: ignore[misc]
            return self.score(
                self.encode(queries, documents, instruction),
                batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress,
            )  # fmt: skip
        _check_budgets(batch_size, max_batch_tokens)
        parts: list[torch.Tensor] = []
        with self._forward():
            for a, b in tqdm(slices, desc="Ranking", unit="slice", disable=not show_progress):
                encoded = self.encode(queries[a:b], documents[a:b], instruction)
                parts.append(self.backend.launch(  # type: ignore[attr-defined]
                    self, encoded, max_batch_tokens=max_batch_tokens or self.max_batch_tokens,
                    batch_size=batch_size or len(encoded),
                ))  # fmt: skip
            scores = torch.cat(parts).cpu().numpy()  # the one synchronisation
        return self._checked(scores)

    @contextlib.contextmanager
    def _forward(self) -> Iterator[None]:
        """Forward passes of one call: serialised (the lock), in inference mode, the model in eval
        mode (no dropout while scoring, even between training steps) and back as it was after."""
        with self._forward_lock, torch.inference_mode():
            training = self.model.training
            self.model.eval()
            try:
                yield
            finally:
                self.model.train(training)

    def _checked(self, scores: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise NonFiniteScoreError(
                f"the model returned a non-finite score for {bad.size} pair(s), first at index {int(bad[0])}; "
                f"the checkpoint may be broken or overflow in {self.dtype} (try torch_dtype='float32')"
            )
        return scores


def _check_budgets(batch_size: int | None, max_batch_tokens: int | None) -> None:
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens <= 0:
        raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")


def _is_onnx_folder(model_id: str, hub_kwargs: dict[str, Any]) -> bool:
    """Whether ``model_id`` is a local folder written by ``mxbai-rerank convert --to onnx``."""
    from pathlib import Path

    from ..convert._onnx import MANIFEST

    return (Path(model_id).expanduser() / str(hub_kwargs.get("subfolder") or "") / MANIFEST).is_file()


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    return int(pad) if pad is not None else 0
