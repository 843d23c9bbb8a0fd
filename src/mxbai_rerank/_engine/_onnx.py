"""The ``onnx`` backend: score through an exported ONNX graph in ONNX Runtime, without the torch model.

The graph (``mxbai-rerank convert --to onnx``, see :mod:`mxbai_rerank.convert._onnx`) holds the
backbone and the score head, so loading it needs neither the transformers model nor its
float32 weights in memory. The model may be:

* a folder written by ``convert --to onnx`` - its graph is run as it is (float32 or int8);
* any checkpoint the engine can load - it is exported once into a cache folder
  (``$MXBAI_RERANK_CACHE``, default ``~/.cache/mxbai_rerank``; the key covers the config, the
  weight files, the family, the prompt and the library versions) and the cached graph is run.
  The export loads the float32 torch model once, in this process.

Batching, truncation and templates stay the engine's: the backend receives ``EncodedPairs``
and runs right-padded token-budget batches (:class:`~._backends.PaddedBackend`, no prefix reuse:
the graph takes whole sequences). CPU only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from .._batching import Batch
from .._extras import require
from .._heads import ScoreHead
from ._backends import PaddedBackend
from ._loading import ModelLoadError

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = ["CACHE_ENV", "OnnxBackend", "OnnxHead", "cache_root"]

logger = logging.getLogger(__name__)

CACHE_ENV = "MXBAI_RERANK_CACHE"


def cache_root() -> Path:
    """Where exported graphs are cached: ``$MXBAI_RERANK_CACHE`` or ``~/.cache/mxbai_rerank``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mxbai_rerank").expanduser()


class OnnxHead(ScoreHead):
    """An ONNX Runtime session as a score head: ``forward(batch) -> (B,)`` float32 raw scores.

    Holds no torch parameters. ``weight_dtype`` is what the engine reports as its dtype
    (``torch.int8`` for a quantized graph, ``torch.float32`` otherwise).
    """

    reuses_prefix: ClassVar[bool] = False

    def __init__(self, session: Any, inputs: list[str], weight_dtype: torch.dtype, graph: Path) -> None:
        super().__init__()
        self.session = session
        self.inputs = list(inputs)
        self.weight_dtype = weight_dtype
        self.graph = graph

    def forward(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        if prefix is not None:
            raise ValueError("an ONNX graph takes whole sequences; it cannot reuse a prefix")
        batch = _right_padded(batch)
        feeds = {
            "input_ids": batch.input_ids.cpu().numpy().astype(np.int64, copy=False),
            "attention_mask": batch.attention_mask.cpu().numpy().astype(np.int64, copy=False),
        }
        if "token_type_ids" in self.inputs:
            types = batch.token_type_ids if batch.token_type_ids is not None else torch.zeros_like(batch.input_ids)
            feeds["token_type_ids"] = types.cpu().numpy().astype(np.int64, copy=False)
        (scores,) = self.session.run(["scores"], feeds)  # (B,) float32
        return torch.from_numpy(np.asarray(scores, dtype=np.float32))

    def extra_repr(self) -> str:
        return f"graph={str(self.graph)!r}, weights={self.weight_dtype}"


def _right_padded(batch: Batch) -> Batch:
    """The same rows right padded (the graph's layout); a right-padded batch is returned as is."""
    if batch.padding_side != "left":
        return batch
    ids, mask = batch.input_ids.clone(), torch.zeros_like(batch.attention_mask)
    types = None if batch.token_type_ids is None else torch.zeros_like(batch.token_type_ids)
    width = batch.input_ids.shape[1]
    for row, n in enumerate(batch.lengths.tolist()):
        ids[row, :n] = batch.input_ids[row, width - n :]
        mask[row, :n] = 1
        if types is not None and batch.token_type_ids is not None:
            types[row, :n] = batch.token_type_ids[row, width - n :]
    return Batch(ids, mask, batch.lengths, types, "right")


class OnnxBackend(PaddedBackend):
    """Runs the model's exported ONNX graph in ONNX Runtime on the CPU (see the module docstring).

    ``quantize``: ``"int8"`` makes sure the graph is int8 (a float32 graph is quantized into
    the cache); ``None`` runs the folder's graph as it is, or exports a float32 one.
    ``threads``: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
    """

    name = "onnx"
    quantize: ClassVar[str | None] = None

    def __init__(self, threads: int | None = None) -> None:
        super().__init__(prefix="off")
        self.threads = threads

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]:
        return {}

    # -- the engine's hook: score without loading the transformers model ----------------
    def load_head(self, engine: ScoringEngine, device: torch.device, hub_kwargs: dict[str, Any]) -> ScoreHead:
        """The graph for ``engine.model_id`` (exported and cached when it has none) in a session."""
        from ..convert._onnx import read_manifest

        if device.type != "cpu":
            raise ModelLoadError(f"the {self.name} backend runs on the CPU (ONNX Runtime), not on {device}")
        folder = _local_folder(engine.model_id, hub_kwargs)
        manifest = read_manifest(folder)
        if manifest is None:
            folder = self._cached_export(engine, folder, hub_kwargs)
            manifest = read_manifest(folder)
            assert manifest is not None
        graph = folder / str(manifest["graph"])
        quantized = manifest.get("quantization") is not None
        if self.quantize == "int8" and not quantized:
            graph, quantized = self._cached_quantized(graph), True
        if manifest.get("family") not in (None, engine.family.name):
            logger.warning(
                "%s: the graph was exported for the %s family, the engine runs %s",
                engine.model_id,
                manifest.get("family"),
                engine.family.name,
            )
        return OnnxHead(
            self._session(graph), list(manifest["inputs"]), torch.int8 if quantized else torch.float32, graph
        )

    def _session(self, graph: Path) -> Any:
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {str(graph)!r}: {' '.join(str(exc).split())}") from exc

    def _cached_export(self, engine: ScoringEngine, folder: Path, hub_kwargs: dict[str, Any]) -> Path:
        """The cache folder of the model's float32 (or int8) graph, exported on a miss."""
        from ..convert._onnx import write_folder

        overrides = dict(getattr(engine, "template_overrides", None) or {})
        key = _fingerprint(folder, engine.family.name, overrides, self.quantize)
        target = cache_root() / "onnx" / f"{engine.family.name}-{key}"
        if (target / "mxbai_rerank_onnx.json").is_file():
            return target
        logger.warning(
            "exporting %s to ONNX%s once, into %s (loads the float32 model; later loads reuse the graph)",
            engine.model_id,
            " (int8)" if self.quantize else "",
            target,
        )
        from . import ScoringEngine

        source = ScoringEngine(
            engine.model_id, engine.family, config=engine.config, device="cpu", torch_dtype=torch.float32,
            max_length=None, template_overrides=overrides, backend="torch", **hub_kwargs,
        )  # fmt: skip
        _build_atomically(target, functools.partial(write_folder, source, quantize=self.quantize, estimated_max=None))
        del source
        return target

    def _cached_quantized(self, graph: Path) -> Path:
        """An int8 copy of a float32 graph, quantized once into the cache."""
        from ..convert._onnx import GRAPH_INT8, quantize_int8

        stat = graph.stat()
        key = hashlib.sha256(f"{graph.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache_root() / "onnx-int8" / key
        if (target / GRAPH_INT8).is_file():
            return target / GRAPH_INT8
        logger.warning("quantizing %s to int8 once, into %s", graph, target)
        _build_atomically(target, lambda tmp: quantize_int8(graph, tmp / GRAPH_INT8))
        return target / GRAPH_INT8


def _build_atomically(target: Path, build: Any) -> None:
    """Run ``build(tmp)`` in a temporary sibling of ``target``, then rename it into place.

    Two processes may build the same entry at once: the first rename wins and the other's
    copy is discarded, so a reader never sees a partial folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_folder(model_id: str, hub_kwargs: dict[str, Any]) -> Path:
    """The local folder holding the model's files (a hub model's snapshot in the hub cache)."""
    path = Path(os.path.expanduser(model_id))
    subfolder = str(hub_kwargs.get("subfolder") or "")
    if path.is_dir():
        return path / subfolder
    from huggingface_hub import snapshot_download

    keys = ("revision", "token", "cache_dir", "local_files_only", "proxies")
    return Path(snapshot_download(model_id, **{k: v for k, v in hub_kwargs.items() if k in keys})) / subfolder


def _fingerprint(folder: Path, family: str, overrides: dict[str, Any], quantize: str | None) -> str:
    """A key that changes when the weights, the config, the prompt or the exporting software change."""
    import onnxruntime
    import transformers

    from .. import __version__

    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    )
    if not any(name.endswith((".safetensors", ".bin")) for name, _, _ in files):
        raise ModelLoadError(f"{str(folder)!r} has no weight files (*.safetensors, *.bin) to export")
    blob = json.dumps(
        [files, family, sorted(overrides.items()), quantize, __version__, torch.__version__,
         transformers.__version__, onnxruntime.__version__],
        default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
