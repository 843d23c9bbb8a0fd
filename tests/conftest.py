"""Session fixtures: tiny deterministic v1/v2 checkpoints, built once per test session.

Set ``MXBAI_TEST_FIXTURES=/some/dir`` to reuse built checkpoints across sessions (they are
deterministic, so a cached copy is identical to a fresh one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fixture_models

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("MXBAI_TEST_FIXTURES")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "models"


@pytest.fixture(scope="session")
def v2_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _fixture_root(tmp_path_factory) / "tiny-qwen2-reranker"
    if not (path / "config.json").exists():
        fixture_models.build_qwen2_reranker(path)
    return path


@pytest.fixture(scope="session")
def v1_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _fixture_root(tmp_path_factory) / "tiny-deberta-reranker"
    if not (path / "config.json").exists():
        fixture_models.build_deberta_reranker(path)
    return path


@pytest.fixture(scope="session")
def v2_reranker(v2_model_dir: Path):
    from mxbai_rerank import MxbaiRerankV2

    return MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype=torch.float32)


@pytest.fixture(scope="session")
def v1_reranker(v1_model_dir: Path):
    from mxbai_rerank import MxbaiRerankV1

    return MxbaiRerankV1(str(v1_model_dir), device="cpu", torch_dtype=torch.float32)
