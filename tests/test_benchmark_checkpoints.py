"""Checkpoints from tests/fixture_models.py must mean the same model to transformers 4.5x and 5.x.

The golden scores (tests/golden/generate_golden.py) and the upstream column of
benchmarks/bench_core.py come from upstream 0.1.6 on transformers 4.5x, which reads the
config.json written here under transformers 5. Transformers 5 writes the RoPE base only inside
``rope_parameters``; transformers 4 reads only the top-level ``rope_theta`` and otherwise falls
back to 10,000, so the two majors would run different models from the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

import fixture_models

QWEN2_ROPE_BASE = 1_000_000.0  # Qwen2's published rope_theta
TRANSFORMERS4_DEFAULT_ROPE_BASE = 10_000.0  # what transformers 4's Qwen2Config uses without one


def _raw(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _transformers4_rope_base(raw: dict) -> float:
    """How transformers 4.5x's Qwen2Config reads the base: top-level key only, no RoPE scaling."""
    scaling = raw.get("rope_scaling")
    assert scaling is None or scaling.get("rope_type", scaling.get("type")) == "default", scaling
    return float(raw.get("rope_theta", TRANSFORMERS4_DEFAULT_ROPE_BASE))


def _transformers5_rope_base(path: Path) -> float:
    """The base transformers 5's rotary embedding actually uses, recovered from its inv_freq."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    config = AutoConfig.from_pretrained(path)
    inv_freq = Qwen2RotaryEmbedding(config).inv_freq.double()
    head_dim = config.hidden_size // config.num_attention_heads
    # inv_freq[i] = base ** (-2i / head_dim)
    return float(inv_freq[1] ** (-head_dim / 2))


def _check_qwen2(path: Path, dtype: str) -> None:
    raw = _raw(path)
    assert "rope_theta" in raw, "no top-level rope_theta: transformers 4 would use a RoPE base of 10,000"
    assert _transformers4_rope_base(raw) == QWEN2_ROPE_BASE
    assert raw["rope_parameters"]["rope_theta"] == raw["rope_theta"]
    assert _transformers5_rope_base(path) == pytest.approx(QWEN2_ROPE_BASE, rel=1e-6)
    # Keys whose defaults differ between the majors (or were renamed) are written explicitly.
    assert raw["dtype"] == raw["torch_dtype"] == dtype
    assert raw["use_sliding_window"] is False and raw["sliding_window"] is None
    assert raw["layer_types"] == ["full_attention"] * raw["num_hidden_layers"]
    assert raw["tie_word_embeddings"] is True
    assert raw["mxbai_rerank"] == {"family": "mxbai-v2"}


def test_fixture_qwen2_config_reads_the_same_rope_base_in_both_transformers_majors(v2_model_dir: Path) -> None:
    _check_qwen2(v2_model_dir, "float32")


def test_benchmark_qwen2_checkpoint_is_bf16_with_the_same_rope_base(tmp_path: Path) -> None:
    # The benchmarks' shape-only checkpoints: random weights stored in bf16, like published ones.
    path = fixture_models.build_qwen2_reranker(
        tmp_path / "bench", fixture_models.TINY_QWEN2, random_fast=True, dtype="bfloat16", with_tokenizer=False
    )
    _check_qwen2(path, "bfloat16")
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(path / "model.safetensors").values()} == {torch.bfloat16}
    assert AutoConfig.from_pretrained(path).dtype == torch.bfloat16


def test_fixture_deberta_config_is_explicit_about_version_dependent_keys(v1_model_dir: Path) -> None:
    raw = _raw(v1_model_dir)
    assert raw["dtype"] == raw["torch_dtype"] == "float32"
    assert "tie_word_embeddings" in raw  # only written by transformers 4 when it differs from its default
    assert raw["mxbai_rerank"] == {"family": "mxbai-v1"}
