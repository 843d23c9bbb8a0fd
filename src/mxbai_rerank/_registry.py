"""The registry: every model fact in one place.

* :data:`FAMILIES` - the reranker families by name (what a family is: ``families/_base.py``).
  Adding a family is one module under ``families/`` plus one entry here (or a call to
  :func:`register_family` from your own code).
* :data:`MODELS` - the published Mixedbread rerankers, each with its family and constants.
* :func:`detect_family` - which family scores a checkpoint. Detection is strict: the caller's
  ``family=``, else an explicit marker in the checkpoint's config
  (``"mxbai_rerank": {"family": "mxbai-v2"}``), else a known model recognised by its hub name
  or by a folder name that carries it. Nothing is guessed from the architecture alone: a
  Llama or Qwen3 causal LM is not an mxbai-v2 reranker just because it is a causal LM.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .families import mxbai_v1, mxbai_v2, mxbai_v2_seq_cls
from .families._base import RerankerFamily

__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_PADDING",
    "DEFAULT_MODEL",
    "FAMILIES",
    "MODELS",
    "ModelSpec",
    "RerankerFamily",
    "available_families",
    "describe_budget_defaults",
    "detect_family",
    "find_spec",
    "get_family",
    "register_family",
]

FAMILIES: dict[str, RerankerFamily] = {
    mxbai_v1.FAMILY.name: mxbai_v1.FAMILY,
    mxbai_v2.FAMILY.name: mxbai_v2.FAMILY,
    mxbai_v2_seq_cls.FAMILY.name: mxbai_v2_seq_cls.FAMILY,  # written by `mxbai-rerank convert --to seq-cls`
}

# The key of the explicit marker in a checkpoint's config.json.
CONFIG_MARKER = "mxbai_rerank"


@dataclass(frozen=True)
class ModelSpec:
    """A published reranker and its constants."""

    name: str  # hub id
    family: str  # a key of FAMILIES
    # Centre of the raw-score range, used by ``normalize=True`` (v2 only).
    estimated_max: float | None = None


DEFAULT_MODEL = "mixedbread-ai/mxbai-rerank-base-v2"

# Padded tokens per forward pass when the caller gives no budget, by device type. On CPU
# larger batches do not run faster and only cost memory; on a GPU they fill the device.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 8192, "mps": 16384, "cuda": 65536}
# Most share of a batch that may be padding. A CPU gains almost nothing from larger batches
# (throughput per token is flat from 512 to 8192 tokens), so it batches only near-equal
# lengths; a GPU trades some padding for fuller batches.
DEFAULT_MAX_PADDING = {"cpu": 0.1, "mps": 0.2, "cuda": 0.3}


def describe_budget_defaults() -> str:
    """``"8192 on CPU, 16384 on MPS, 65536 on CUDA"``, for help texts."""
    return ", ".join(f"{tokens} on {device.upper()}" for device, tokens in DEFAULT_MAX_BATCH_TOKENS.items())


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("mixedbread-ai/mxbai-rerank-base-v2", "mxbai-v2", estimated_max=9.0),
    ModelSpec("mixedbread-ai/mxbai-rerank-large-v2", "mxbai-v2", estimated_max=12.0),
    ModelSpec("mixedbread-ai/mxbai-rerank-xsmall-v1", "mxbai-v1"),
    ModelSpec("mixedbread-ai/mxbai-rerank-base-v1", "mxbai-v1"),
    ModelSpec("mixedbread-ai/mxbai-rerank-large-v1", "mxbai-v1"),
)

_BY_NAME = {spec.name: spec for spec in MODELS}
_BY_SHORT_NAME = {spec.name.split("/", 1)[1]: spec for spec in MODELS}


def register_family(family: RerankerFamily) -> None:
    """Make ``family`` available to ``load(..., family=family.name)`` and config markers."""
    if not isinstance(family, RerankerFamily):
        raise TypeError(f"expected a RerankerFamily, got {type(family).__name__}")
    FAMILIES[family.name] = family


def available_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(family: str | RerankerFamily) -> RerankerFamily:
    if isinstance(family, RerankerFamily):
        return family
    if family not in FAMILIES:
        raise ValueError(f"unknown reranker family {family!r}; known: {', '.join(available_families())}")
    return FAMILIES[family]


def find_spec(name_or_path: str) -> ModelSpec | None:
    """The published model behind its exact hub name, its hub-cache folder
    (``models--mixedbread-ai--<name>/snapshots/<sha>``) or a local folder whose own name is
    ``<name>``. A fine-tune saved under ``.../mxbai-rerank-base-v2/checkpoint-500`` or another
    organisation's ``someone/mxbai-rerank-base-v2`` is not the published model."""
    name = str(name_or_path)
    if name in _BY_NAME:
        return _BY_NAME[name]
    parts = [part for part in re.split(r"[\\/]", name) if part]
    for part in parts:
        if part.startswith("models--"):
            hub_id = part.removeprefix("models--").replace("--", "/", 1)
            return _BY_NAME.get(hub_id)
    if parts and (os.path.exists(os.path.expanduser(name)) or looks_like_local_path(name)):
        return _BY_SHORT_NAME.get(parts[-1])  # a local folder: by its own name
    return None


def looks_like_local_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else names a local path."""
    return name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or "\\" in name


def config_marker(config: Any) -> dict[str, Any]:
    """The ``mxbai_rerank`` marker of a config (``{}`` when absent)."""
    marker = getattr(config, CONFIG_MARKER, None)
    return dict(marker) if isinstance(marker, dict) else {}


def detect_family(
    name_or_path: str, config: Any, family: str | RerankerFamily | None = None
) -> tuple[RerankerFamily, ModelSpec | None]:
    """The family that scores this checkpoint (strict; see the module docstring) and its spec, if known.

    Raises ``ModelLoadError`` for a model no rule identifies, and for a config the chosen
    family cannot score (e.g. a 2-label classifier, or a causal LM asked to be a v1 model).
    """
    from ._engine import ModelLoadError

    spec = find_spec(name_or_path)
    if family is not None:
        chosen = get_family(family)
    elif "family" in config_marker(config):
        name = config_marker(config)["family"]
        if name not in FAMILIES:
            raise ModelLoadError(
                f"{name_or_path!r} declares the reranker family {name!r} in its config, which this version "
                f"does not know (known: {', '.join(available_families())})"
            )
        chosen = FAMILIES[name]
    elif spec is not None:
        chosen = FAMILIES[spec.family]
    else:
        architectures = list(getattr(config, "architectures", None) or [])
        raise ModelLoadError(
            f"cannot tell which reranker family {name_or_path!r} (architectures={architectures}) belongs to: "
            f"it is not a known Mixedbread model and its config has no {CONFIG_MARKER!r} marker. If it is one "
            "(for example a renamed local copy), force the family: load(path, family='mxbai-v2') or "
            "MxbaiRerankV2(path) (family='mxbai-v1' / MxbaiRerankV1 for a v1 cross-encoder; --family on the "
            f"command line). Known families: {', '.join(available_families())}"
        )
    chosen.check_config(config)
    return chosen, spec if spec is not None and spec.family == chosen.name else None


def natural_family(name_or_path: str, config: Any) -> str | None:
    """The family a checkpoint identifies itself as (marker or known name), without raising."""
    marker = config_marker(config).get("family")
    if isinstance(marker, str):
        return marker
    spec = find_spec(name_or_path)
    return spec.family if spec is not None else None
