"""``convert --to onnx``: the graph holds the score head and matches the torch model in float32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mxbai_rerank import ModelLoadError, load
from mxbai_rerank._batching import collate
from mxbai_rerank.convert import convert_to_onnx

TOLERANCE = 1e-3
QUERIES = ["what is a cat", "how do I bake bread?", "what is a cat"]
DOCUMENTS = ["A cat is a small feline.", "Knead the dough for ten minutes. " * 30, "x"]


@pytest.fixture(scope="module", params=["v2", "v1"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = request.getfixturevalue(f"{request.param}_model_dir")
    out = tmp_path_factory.mktemp("onnx") / f"{request.param}-onnx"
    result = convert_to_onnx(str(source), out)
    assert result.graph == "model.onnx"
    return source, out


def test_graph_matches_torch_in_float32(exported: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    source, out = exported
    reference = load(str(source), device="cpu", torch_dtype="float32")
    encoded = reference.encode_pairs(QUERIES, DOCUMENTS)
    expected = reference.score_encoded(encoded)
    # The graph alone, in plain ONNX Runtime: right-padded ids and mask in, one raw score per pair out.
    manifest = json.loads((out / "mxbai_rerank_onnx.json").read_text())
    session = ort.InferenceSession(str(out / manifest["graph"]), providers=["CPUExecutionProvider"])
    for rows in ([0, 1, 2], [2]):  # dynamic batch and sequence axes
        batch = collate([encoded.input_ids[i] for i in rows], reference.engine.pad_token_id)
        feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
        if "token_type_ids" in manifest["inputs"]:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        (scores,) = session.run(["scores"], feeds)
        np.testing.assert_allclose(scores, expected[rows], atol=TOLERANCE, rtol=0)
    # Through this package: the folder selects the onnx backend by itself.
    converted = load(str(out))
    assert converted.info().backend == "onnx"
    np.testing.assert_allclose(converted.score_pairs(QUERIES, DOCUMENTS), reference.score_pairs(QUERIES, DOCUMENTS),
                               atol=TOLERANCE, rtol=0)  # fmt: skip


def test_torch_backend_refuses_a_graph_folder(exported: tuple[Path, Path]) -> None:
    _, out = exported
    with pytest.raises(ModelLoadError, match="ONNX graph"):
        load(str(out), backend="torch")
