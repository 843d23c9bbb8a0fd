"""One measurement in a fresh process: load a v2 reranker, rank the passages, report JSON.

Runs under either implementation: whichever ``mxbai_rerank`` the interpreter imports
(upstream 0.1.6 in its own virtualenv, or this package). Peak RSS is the process's own
``ru_maxrss``, so model loading and scoring are both counted, the same way for both.

Besides timings it reports what the caller needs to check that both implementations ran the
same model: ``effective_config`` (the checkpoint as this interpreter's transformers reads it,
RoPE base included), ``check_scores`` (raw scores of the ``--check-indices`` documents, in that
order, computed before any timing) and ``scores`` (raw scores of the timed run, input order).
``--repeats 0`` stops after the check: no warm-up, no timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Any


def effective_config(model_dir: str) -> dict[str, Any]:
    """The Qwen2 settings this interpreter's transformers reads from ``model_dir``, compared across versions.

    The RoPE base is recovered from the rotary embedding transformers itself builds from the
    config (``inv_freq[1] = base ** (-2 / head_dim)``), so it is the base the model really uses,
    whichever key (``rope_theta`` or ``rope_parameters``) that version reads it from.
    """
    import transformers
    from transformers import AutoConfig
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    config = AutoConfig.from_pretrained(model_dir)
    rotary = Qwen2RotaryEmbedding(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = float(rotary.inv_freq.double()[1] ** (-head_dim / 2))
    sliding = bool(getattr(config, "use_sliding_window", False))
    return {
        "transformers": transformers.__version__,
        "model_type": config.model_type,
        "rope_base": float(f"{base:.6g}"),
        "rope_type": getattr(rotary, "rope_type", None),
        "rope_attention_scaling": float(getattr(rotary, "attention_scaling", 1.0)),
        "head_dim": head_dim,
        "layer_types": list(getattr(config, "layer_types", None) or []),
        "sliding_window": config.sliding_window if sliding else None,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "dtype": str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)),
        **{
            key: getattr(config, key)
            for key in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "max_position_embeddings",
                "rms_norm_eps",
                "hidden_act",
            )
        },
    }


def prepare_onnx(model: str, output: str) -> None:
    """``mxbai-rerank convert --to onnx --quantize int8``, timed, with this process's peak RSS."""
    from mxbai_rerank.convert import convert_to_onnx

    t0 = time.perf_counter()
    convert_to_onnx(model, output, quantize="int8", overwrite=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak, "output": output}))


def gate(reranker: Any, spec: str) -> dict[str, Any]:
    """Scores of Q generated queries x D mixed passages, and nDCG@10 on the docstring collection (this package)."""
    import tempfile
    from pathlib import Path

    from mxbai_rerank.evaluation import evaluate, generate_workload

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "evaluation"))
    from docstring_beir import build_docstring_beir

    queries, docs = (int(x) for x in spec.split(","))
    workload = generate_workload(queries, docs, seed=0)
    scores = [
        [float(x) for x in reranker.score_pairs([q] * len(d), d)]
        for q, d in zip(workload.queries, workload.documents, strict=True)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        collection = build_docstring_beir(Path(tmp) / "docstrings")
        ndcg = evaluate(reranker, collection, top_k=20).reranked["ndcg@10"]  # 40 queries x 20
    return {"gate_scores": scores, "ndcg@10": ndcg}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--passages", required=True, help="JSON file: {'query': str, 'documents': [str]}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-dtype", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--check-indices", default="", help="comma-separated documents to score before timing")
    parser.add_argument("--backend", default=None, help="this package only: a backend (int8, onnx-int8, torch-ao-int8)")
    parser.add_argument("--prepare-onnx", default=None, metavar="DIR", help="only convert --model to an int8 ONNX DIR")
    parser.add_argument("--gate", default=None, metavar="Q,D", help="only score Q queries x D passages and nDCG@10")
    args = parser.parse_args()
    if args.prepare_onnx:
        prepare_onnx(args.model, args.prepare_onnx)
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import mxbai_rerank
    from mxbai_rerank import MxbaiRerankV2

    with open(args.passages, encoding="utf-8") as f:
        data = json.load(f)
    kwargs = {}
    if args.torch_dtype:
        kwargs["torch_dtype"] = getattr(torch, args.torch_dtype)
    if args.device:
        kwargs["device"] = args.device
    if args.backend == "torch-ao-int8":
        from mxbai_rerank._engine._int8 import TorchAoInt8Backend

        kwargs["backend"] = TorchAoInt8Backend()
    elif args.backend:
        kwargs["backend"] = args.backend
    t0 = time.perf_counter()
    reranker = MxbaiRerankV2(args.model, **kwargs)
    load_s = time.perf_counter() - t0
    dtype = getattr(reranker, "dtype", None) or next(reranker.model.parameters()).dtype
    info = reranker.info() if hasattr(reranker, "info") else None  # upstream has no info()
    if args.gate:
        print(json.dumps({"load_s": load_s, **gate(reranker, args.gate)}))
        return
    out: dict[str, Any] = {
        "implementation": f"{mxbai_rerank.__name__} {getattr(mxbai_rerank, '__version__', '0.1.6 (upstream)')}",
        "version": getattr(mxbai_rerank, "__version__", "0.1.6"),
        "dtype": str(dtype).removeprefix("torch."),
        "device": info.device if info is not None else str(next(reranker.model.parameters()).device),
        "backend": info.backend if info is not None else "torch",
        "load_s": load_s,
        "effective_config": effective_config(args.model),
    }
    if args.check_indices:
        indices = [int(i) for i in args.check_indices.split(",")]
        docs = [data["documents"][i] for i in indices]
        checked = reranker.rank(data["query"], docs, top_k=len(docs), sort=False)
        out["check_indices"] = indices
        out["check_scores"] = [float(r.score) for r in sorted(checked, key=lambda r: r.index)]
    if args.repeats <= 0:
        print(json.dumps(out))
        return
    reranker.rank(data["query"], data["documents"][:2])  # warm-up: kernels, allocator, oneDNN
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        results = reranker.rank(data["query"], data["documents"], top_k=len(data["documents"]))
        sync()
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    scores = [0.0] * len(data["documents"])
    for r in results:
        scores[r.index] = float(r.score)
    out |= {
        "times_s": times,
        "seconds_per_query": seconds,
        "docs_per_s": len(data["documents"]) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "top3": [(r.index, round(float(r.score), 4)) for r in results[:3]],
        "scores": scores,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
