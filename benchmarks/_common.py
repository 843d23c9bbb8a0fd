"""Shared by the benchmark scripts: the checkpoints, real English passages of mixed length, machine facts.

Passages are built from the same standard-library docstring sentences as ``mxbai-rerank
bench`` (:func:`mxbai_rerank.evaluation._text.stdlib_sentences`). Speed depends on token counts,
not on weights, so benchmarks pair them with random-weight models at the real shapes, built by
:func:`benchmark_checkpoint` (the one builder every benchmark uses).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mxbai_rerank.evaluation._text import stdlib_sentences

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE.parent / "tests"))

import fixture_models  # noqa: E402

SHAPES = ("tiny", "base", "large")

# Token lengths of the core benchmark's 32 passages: mostly short, a long tail (mean ~125,
# max ~460), the mix a first-stage retriever returns from a corpus of web-style passages.
TARGET_TOKENS = (
    24, 30, 36, 40, 44, 48, 54, 60, 66, 72, 78, 84, 90, 94, 98, 102,
    106, 112, 118, 124, 130, 136, 144, 152, 162, 172, 186, 200, 220, 250, 310, 460,
)  # fmt: skip


def mixed_length_passages(count_tokens: Callable[[str], int], targets: tuple[int, ...] = TARGET_TOKENS) -> list[str]:
    """For each target length, consecutive docstring sentences whose token count is closest to it.

    Deterministic: starts are spread evenly over the sentence list and the best of a few
    starts is kept, so the same Python version always yields the same passages.
    """
    sentences = stdlib_sentences()
    out: list[str] = []
    for i, target in enumerate(targets):
        best: tuple[int, str] | None = None
        for attempt in range(8):
            start = ((i * 8 + attempt) * 7919) % len(sentences)
            text, tokens = "", 0
            for j in range(start, start + 200):
                candidate = f"{text} {sentences[j % len(sentences)]}".strip()
                tokens = count_tokens(candidate)
                if best is None or abs(tokens - target) < abs(best[0] - target):
                    best = (tokens, candidate)
                if tokens >= target:
                    break
                text = candidate
        assert best is not None
        out.append(best[1])
    return out


def benchmark_checkpoint(shape: str, cache: Path = CACHE) -> Path:
    """The v2 (Qwen2) checkpoint every benchmark runs, built once into ``cache``.

    ``base`` and ``large`` are the Qwen2-0.5B (mxbai-rerank-base-v2) and Qwen2-1.5B
    (large-v2) shapes with random weights stored in bf16, like the published checkpoints;
    ``tiny`` is the deterministic test fixture (float32), for smoke runs. All are written by
    tests/fixture_models.py, whose config.json reads the same under transformers 4.5x (upstream
    0.1.6) and 5.x, RoPE base included; a checkpoint cached before that was fixed has its
    config.json rewritten in place (weights are not touched).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    path = cache / ("qwen2-tiny" if shape == "tiny" else f"qwen2-{shape}-random-bf16")
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        if not checkpoint_is_portable(path):
            fixture_models.make_config_portable(path)
        return path
    if shape == "tiny":
        fixture_models.build_qwen2_reranker(path)
    else:
        dims = {"base": fixture_models.QWEN2_0_5B, "large": fixture_models.QWEN2_1_5B}[shape]
        fixture_models.build_qwen2_reranker(path, dims, random_fast=True, dtype="bfloat16")
    return path


def checkpoint_is_portable(path: Path) -> bool:
    """Whether config.json states the RoPE base where transformers 4 and 5 both read it."""
    cfg = json.loads((path / "config.json").read_text())
    base = cfg.get("rope_theta")
    params = cfg.get("rope_parameters") or {}
    dtype = cfg.get("dtype")
    return (
        base is not None
        and params.get("rope_theta") == base
        and cfg.get("rope_scaling") is None
        and dtype is not None
        and cfg.get("torch_dtype") == dtype
        and "tie_word_embeddings" in cfg
    )


def sentence_pool() -> tuple[str, ...]:
    return stdlib_sentences()


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU model and flags, cores, platform, Python, torch and GPU (if any), for result files."""
    cpu = _cpuinfo("model name") or platform.processor()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    flags = set((_cpuinfo("flags") or "").split())
    info["cpu_flags"] = [
        f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags
    ]
    # Instruction-set caps (to emulate an older CPU): oneDNN, ATen's kernels, MKL.
    limits = {
        k: os.environ[k]
        for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
        if k in os.environ
    }
    if limits:
        info["isa_limits"] = limits
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info
