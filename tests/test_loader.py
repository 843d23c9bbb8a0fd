"""load() and model-directory errors; dtype/device policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mxbai_rerank import ModelLoadError, MxbaiRerankV1, MxbaiRerankV2, load
from mxbai_rerank._engine._loading import resolve_dtype


def test_load_picks_the_family_from_the_config(v1_model_dir: Path, v2_model_dir: Path) -> None:
    assert isinstance(load(str(v2_model_dir), device="cpu", torch_dtype="float32"), MxbaiRerankV2)
    v1 = load(str(v1_model_dir), device="cpu", torch_dtype="float32", estimated_max=3.0)
    assert isinstance(v1, MxbaiRerankV1)


def test_v1_scores_are_probabilities_and_refuse_instructions(v1_reranker: MxbaiRerankV1) -> None:
    results = v1_reranker.rank("who wrote it", ["Harper Lee wrote it.", "The sky is blue."], normalize=True)
    assert all(0 < r.score < 1 for r in results)
    with pytest.raises(ValueError, match="instruction is only supported by the v2 models"):
        v1_reranker.rank("q", ["a"], instruction="be nice")


def test_wrong_class_for_the_model_says_which_to_use(v1_model_dir: Path, v2_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="MxbaiRerankV1"):
        MxbaiRerankV2(str(v1_model_dir), device="cpu")
    with pytest.raises(ModelLoadError, match="MxbaiRerankV2"):
        MxbaiRerankV1(str(v2_model_dir), device="cpu")


def test_missing_and_broken_model_directories(tmp_path: Path, v2_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load(str(tmp_path))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load(str(tmp_path / "file.bin"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"unreadable config\.json"):
        load(str(bad))
    not_reranker = tmp_path / "bert"
    not_reranker.mkdir()
    (not_reranker / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ModelLoadError, match="cannot tell which reranker family"):
        load(str(not_reranker))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(v2_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load"):
        load(str(no_weights), device="cpu")


def test_dtype_policy() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("float32", cuda, "bfloat16") == torch.float32
    assert resolve_dtype(torch.float16, cpu, None) == torch.float16
    assert resolve_dtype(None, cuda, "bfloat16") == torch.bfloat16
    assert resolve_dtype("auto", cuda, "float16") == torch.float16
    assert resolve_dtype(None, cpu, "bfloat16") in {torch.float32, torch.bfloat16}
    with pytest.raises(ValueError, match="unknown torch_dtype"):
        resolve_dtype("int8", cpu, None)


def test_upstream_import_paths() -> None:
    import mxbai_rerank
    from mxbai_rerank.base import BaseReranker, RankResult  # noqa: F401
    from mxbai_rerank.mxbai_rerank_v1 import MxbaiRerankV1 as V1
    from mxbai_rerank.mxbai_rerank_v2 import MxbaiRerankV2 as V2
    from mxbai_rerank.utils import TorchModule, auto_device, ensure_multiple_of_8, sigmoid_normalize, top_k_numpy  # noqa: F401

    assert V1 is mxbai_rerank.MxbaiRerankV1 and V2 is mxbai_rerank.MxbaiRerankV2
    assert set(mxbai_rerank.__all__) >= {"MxbaiRerankV1", "MxbaiRerankV2", "RankResult", "BaseReranker", "load"}
