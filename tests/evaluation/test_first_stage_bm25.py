"""First-stage candidates: BM25 (bm25s) over title + text, and the top of a given run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxbai_rerank.evaluation import BeirDataset, BM25Settings, bm25_search, candidates_from_run


def dataset(corpus: dict[str, tuple[str, str]], queries: dict[str, str]) -> BeirDataset:
    qrels = {qid: {next(iter(corpus)): 1} for qid in queries}
    return BeirDataset("toy", Path("."), "test", corpus, queries, qrels)


CORPUS = {
    "tar": ("tarfile", "Read and write tar archive files, including those using gzip, bz2 and lzma compression."),
    "zip": ("zipfile", "Read and write ZIP archive files with optional compression."),
    "json": ("json", "Encode Python objects as JSON text and decode JSON documents."),
    "heap": ("heapq", "Heap queue algorithm, also known as the priority queue algorithm."),
    "same": ("heapq", "Heap queue algorithm, also known as the priority queue algorithm."),
    "csv": ("csv", "Reading and writing of comma separated values files."),
}


def test_bm25_ranks_matching_documents_only() -> None:
    data = dataset(CORPUS, {"q1": "decode JSON documents", "q2": "priority queue", "q3": "the of and"})
    ranking, used = bm25_search(data, top_k=3, settings=BM25Settings(stemmer="none"))
    assert ranking["q1"][0][0] == "json"
    # Identical text ties on score and keeps corpus order; non-matching documents never appear.
    assert [d for d, _ in ranking["q2"]] == ["heap", "same"]
    assert ranking["q2"][0][1] == pytest.approx(ranking["q2"][1][1])
    assert ranking["q3"] == []  # only stopwords
    for docs in ranking.values():
        scores = [s for _, s in docs]
        assert len(docs) <= 3 and all(s > 0 for s in scores) and scores == sorted(scores, reverse=True)
    assert used["stemmer"] == "none" and used["k1"] == 1.2 and used["b"] == 0.75


def test_bm25_searches_titles_and_respects_top_k() -> None:
    data = dataset(CORPUS, {"q": "tarfile zipfile csv archive files"})
    ranking, _ = bm25_search(data, top_k=2, settings=BM25Settings(stemmer="none"))
    assert [d for d, _ in ranking["q"]] == ["tar", "zip"] or [d for d, _ in ranking["q"]] == ["zip", "tar"]
    with pytest.raises(ValueError, match="top_k"):
        bm25_search(data, top_k=0)


def test_identical_ids_are_skipped_like_beir() -> None:
    # ArguAna-style: the query is itself a corpus document.
    corpus = {**CORPUS, "q1": ("", "Encode Python objects as JSON text.")}
    data = dataset(corpus, {"q1": "Encode Python objects as JSON text."})
    kept, _ = bm25_search(data, top_k=1, settings=BM25Settings(stemmer="none"))
    assert kept["q1"] == [("json", pytest.approx(kept["q1"][0][1]))]
    everything, _ = bm25_search(data, top_k=1, settings=BM25Settings(stemmer="none"), ignore_identical_ids=False)
    assert everything["q1"][0][0] == "q1"


def test_candidates_from_run_skip_unknown_and_cut_to_top_k() -> None:
    data = dataset({**CORPUS, "q1": ("", "a document with a query's id")}, {"q1": "x", "q2": "y"})
    run = {"q1": [("zip", 9.0), ("ghost", 8.0), ("q1", 7.5), ("tar", 7.0), ("csv", 6.0)], "q9": [("json", 1.0)]}
    ranking, unknown = candidates_from_run(run, data, top_k=2)
    assert ranking == {"q1": [("zip", 9.0), ("tar", 7.0)], "q2": []}
    assert unknown == 1
    with pytest.raises(ValueError, match="do not match"):
        candidates_from_run({"other": [("zip", 1.0)]}, data, top_k=2)
