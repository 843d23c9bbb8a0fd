"""Model facts in one place: prompt templates, score tokens, normalisation constants, shapes.

Everything model-specific that upstream scattered over class attributes and dict literals
lives here as data. Code elsewhere asks :func:`find_spec` and never hard-codes a model fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["v1", "v2"]


@dataclass(frozen=True)
class V2Prompt:
    """How a (query, document) pair becomes one causal-LM prompt for the v2 models.

    Layout (token level)::

        prefix | [instruction sep] query | sep document | sep task suffix

    and the score is ``logit(positive_token) - logit(negative_token)`` at the last position.
    """

    prefix: str = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    suffix: str = "<|im_end|>\n<|im_start|>assistant\n"
    sep: str = "\n"
    instruction: str = "instruction: {instruction}"
    query: str = "query: {query}"
    document: str = "document: {document}"
    task: str = (
        "You are a search relevance expert who evaluates how well documents match search queries. "
        "For each query-document pair, carefully analyze the semantic relationship between them, "
        "then provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
    )
    positive_token: str = "1"
    negative_token: str = "0"
    # The query part (with its instruction line) may take at most this share of max_length.
    query_share_num: int = 3
    query_share_den: int = 4


@dataclass(frozen=True)
class ModelSpec:
    """A published Mixedbread reranker."""

    name: str
    family: Family
    params: str
    hidden_size: int
    num_hidden_layers: int
    # v2 only: centre of the raw-score range, used by ``normalize=True``.
    estimated_max: float | None = None
    max_length: int | None = None


V2_PROMPT = V2Prompt()
# Upstream's value for any v2 model it does not know (including every local path).
FALLBACK_ESTIMATED_MAX = 12.0
DEFAULT_V2_MAX_LENGTH = 8192
DEFAULT_MODEL = "mixedbread-ai/mxbai-rerank-base-v2"

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("mixedbread-ai/mxbai-rerank-base-v2", "v2", "0.5B", 896, 24, estimated_max=9.0, max_length=8192),
    ModelSpec("mixedbread-ai/mxbai-rerank-large-v2", "v2", "1.5B", 1536, 28, estimated_max=12.0, max_length=8192),
    ModelSpec("mixedbread-ai/mxbai-rerank-xsmall-v1", "v1", "70M", 384, 12, max_length=512),
    ModelSpec("mixedbread-ai/mxbai-rerank-base-v1", "v1", "184M", 768, 12, max_length=512),
    ModelSpec("mixedbread-ai/mxbai-rerank-large-v1", "v1", "435M", 1024, 24, max_length=512),
)

_BY_NAME = {spec.name: spec for spec in MODELS}
_BY_SHORT_NAME = {spec.name.split("/", 1)[1]: spec for spec in MODELS}


def _short_name_in(name_or_path: str) -> ModelSpec | None:
    """A spec whose short name appears as a path component (local copies, hub cache dirs)."""
    # Hub cache folders look like ``models--mixedbread-ai--mxbai-rerank-base-v2/snapshots/<sha>``.
    parts = re.split(r"[\\/]|--", name_or_path)
    for part in reversed(parts):
        if part in _BY_SHORT_NAME:
            return _BY_SHORT_NAME[part]
    return None


def find_spec(name_or_path: str, config: Any | None = None) -> ModelSpec | None:
    """The known model behind ``name_or_path``, by hub name, path or config fingerprint.

    A config fingerprint (family, hidden size, layer count) identifies a local copy of a
    published model even when its folder was renamed.
    """
    spec = _BY_NAME.get(name_or_path) or _short_name_in(str(name_or_path))
    if spec is not None or config is None:
        return spec
    family = family_of_config(config)
    for candidate in MODELS:
        if (
            candidate.family == family
            and getattr(config, "hidden_size", None) == candidate.hidden_size
            and getattr(config, "num_hidden_layers", None) == candidate.num_hidden_layers
        ):
            return candidate
    return None


def family_of_config(config: Any) -> Family | None:
    """``v1`` for a sequence classifier, ``v2`` for a causal LM, ``None`` for anything else."""
    architectures = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "v1"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "v2"
    model_type = getattr(config, "model_type", "")
    if model_type in {"qwen2", "qwen3"}:
        return "v2"
    if model_type in {"deberta-v2", "deberta"} and getattr(config, "num_labels", 0) == 1:
        return "v1"
    return None
