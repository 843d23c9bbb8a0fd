"""Shared by the benchmark scripts: real English passages of mixed length, and machine facts.

Passages are built from the same standard-library docstring sentences as ``mxbai-rerank
bench`` (:func:`mxbai_rerank.evaluation._text.stdlib_sentences`). Speed depends on token counts,
not on weights, so benchmarks pair them with random-weight models at the real shapes.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mxbai_rerank.evaluation._text import stdlib_sentences

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


def sentence_pool() -> tuple[str, ...]:
    return stdlib_sentences()


def machine() -> dict[str, Any]:
    """CPU model, cores, platform, Python, torch and GPU (if any), for result files."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info
