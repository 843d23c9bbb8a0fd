"""``evaluate()`` from Python: with a Scorer (only the protocol) and with a predict-only custom reranker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from docstring_beir import build_docstring_beir, reference_metrics

from mxbai_rerank import BaseReranker, Scorer, ScorerInfo
from mxbai_rerank.evaluation import evaluate, load_beir


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_docstring_beir(tmp_path_factory.mktemp("beir") / "docstrings", num_queries=12, num_distractors=20)


class ProtocolOnly:
    """A real model seen only through the ``Scorer`` protocol: no ``score_pairs``, no attributes,
    no private methods. ``evaluate`` must need nothing else."""

    def __init__(self, inner: Scorer) -> None:
        self._inner = inner

    def encode_pairs(self, queries, documents, *, instruction=None, rank_fields=None):
        return self._inner.encode_pairs(queries, documents, instruction=instruction, rank_fields=rank_fields)

    def score_encoded(self, encoded, *, batch_size=None, max_batch_tokens=None, show_progress=False):
        return self._inner.score_encoded(
            encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress=show_progress
        )

    def postprocess(self, raw, *, normalize=False):
        return self._inner.postprocess(raw, normalize=normalize)

    def info(self) -> ScorerInfo:
        return self._inner.info()

    def tokenizer_copy(self):
        return self._inner.tokenizer_copy()


class WordOverlapReranker(BaseReranker):
    """A real (if simple) reranker that implements only ``predict``: shared lowercase words."""

    def predict(self, queries: list[str], documents: list[str], **kwargs: object) -> np.ndarray:
        def words(text: str) -> set[str]:
            return set(re.findall(r"[a-z]+", text.lower()))

        return np.array([len(words(q) & words(d)) for q, d in zip(queries, documents, strict=True)], dtype=float)


def test_evaluate_with_a_scorer_writes_files(tmp_path: Path, collection: Path, v2_reranker) -> None:
    result = evaluate(ProtocolOnly(v2_reranker), collection, top_k=3, max_queries=6, output_dir=tmp_path)
    data = load_beir(collection)
    kept = list(data.queries)[:6]
    assert list(result.per_query) == kept and result.dataset["num_queries"] == 6
    for qid in kept:
        candidates = [d for d, _ in result.first_stage_run[qid]]
        assert 0 < len(candidates) <= 3
        scores = v2_reranker.score_pairs([data.queries[qid]] * len(candidates),
                                         [data.document_text(d) for d in candidates])  # fmt: skip
        order = sorted(range(len(candidates)), key=lambda j: (-scores[j], j))
        assert [d for d, _ in result.run[qid]] == [candidates[j] for j in order]
        assert [s for _, s in result.run[qid]] == pytest.approx([float(scores[j]) for j in order], abs=1e-5)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["reranked"] == result.reranked and written["first_stage"] == result.first_stage
    assert written["settings"]["max_queries"] == 6
    # The model is described by the scorer's info(), JSON-ready.
    info = v2_reranker.info()
    assert written["model"] == {"name": info.model_id, **info.to_dict()} and info.family and info.dtype == "float32"
    assert (tmp_path / "run.trec").read_text().splitlines()[0].endswith(" tiny-qwen2-reranker")


def test_evaluate_predict_only_reranker_on_a_given_ranking(collection: Path) -> None:
    data = load_beir(collection)
    # A first stage that buries each query's best document at the bottom of 6 candidates.
    doc_ids = list(data.corpus)
    ranking = {}
    for n, (qid, judged) in enumerate(data.qrels.items()):
        best = max(judged, key=judged.get)
        others = [d for d in doc_ids[n : n + 8] if d not in judged][:5]
        ranking[qid] = [(d, 10.0 - i) for i, d in enumerate([*others, best])]
    result = evaluate(WordOverlapReranker(), data, first_stage=ranking, top_k=6)
    ordered = {q: [d for d, _ in docs] for q, docs in result.run.items()}
    reference, _ = reference_metrics(data.qrels, ordered)
    assert result.reranked == pytest.approx(reference, abs=1e-12)
    assert result.first_stage["mrr@10"] == pytest.approx(1 / 6)
    # Each docstring's rest shares words with its first sentence: overlap reranking helps.
    assert result.reranked["mrr@10"] > 0.5
    for qid, docs in result.run.items():
        scores = [s for _, s in docs]
        assert scores == sorted(scores, reverse=True)
        assert {d for d, _ in docs} == {d for d, _ in ranking[qid]}
    assert result.settings["first_stage"] == "ranking" and result.model["name"] == "WordOverlapReranker"


def test_evaluate_rejects_bad_settings(collection: Path) -> None:
    with pytest.raises(TypeError, match=r"mxbai_rerank\.Scorer"):
        evaluate(object(), collection)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        evaluate(WordOverlapReranker(), collection, top_k=0)
    with pytest.raises(ValueError, match="max_queries"):
        evaluate(WordOverlapReranker(), collection, max_queries=0)
