"""``load()``: pick the right reranker class from a model's config."""

from __future__ import annotations

from typing import Any

from ._model import TransformerReranker
from ._registry import DEFAULT_MODEL, family_of_config
from ._runtime import ModelLoadError, read_config


def load(model_name_or_path: str = DEFAULT_MODEL, family: str | None = None, **kwargs: Any) -> TransformerReranker:
    """Load any Mixedbread reranker: a ``*ForSequenceClassification`` model as
    :class:`MxbaiRerankV1`, a causal LM (Qwen2) as :class:`MxbaiRerankV2`.

    ``kwargs`` go to the class constructor.
    """
    from .mxbai_rerank_v1 import MxbaiRerankV1
    from .mxbai_rerank_v2 import MxbaiRerankV2

    config_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "trust_remote_code") if k in kwargs}
    found = family_of_config(read_config(str(model_name_or_path), **config_kwargs))
    family = {"mxbai-v1": "v1", "mxbai-v2": "v2"}.get(family or "", found)
    if family == "v1":
        kwargs.pop("estimated_max", None)
        return MxbaiRerankV1(model_name_or_path, **kwargs)
    if family == "v2":
        return MxbaiRerankV2(model_name_or_path, **kwargs)
    raise ModelLoadError(
        f"{model_name_or_path!r} is not a reranker: expected a *ForSequenceClassification (v1) "
        "or a causal LM such as Qwen2ForCausalLM (v2)"
    )
