"""Loading BEIR-format collections, and the cached download of ``beir:NAME``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from docstring_beir import build_docstring_beir, read_qrels

from mxbai_rerank.evaluation import DatasetError, download_beir, load_beir, resolve_dataset


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_docstring_beir(tmp_path_factory.mktemp("beir") / "docstrings", num_queries=12, num_distractors=10)


def write_collection(root: Path, corpus: str, queries: str, qrels: str, split: str = "test") -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (root / "queries.jsonl").write_text(queries, encoding="utf-8")
    (root / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_load_docstring_collection(collection: Path) -> None:
    data = load_beir(collection, "test")
    corpus_lines = [json.loads(line) for line in (collection / "corpus.jsonl").read_text().splitlines()]
    qrels = read_qrels(collection / "qrels" / "test.tsv")
    assert data.qrels == qrels
    assert list(data.queries) == list(qrels)  # exactly the judged queries, in qrels order
    assert list(data.corpus) == [d["_id"] for d in corpus_lines]
    doc = corpus_lines[-1]
    assert data.document_text(doc["_id"]) == f"{doc['title']} {doc['text']}"
    assert data.describe()["num_queries"] == 12 and data.describe()["num_documents"] == len(corpus_lines)
    assert len(load_beir(collection, "dev").queries) == 5


def test_title_missing_or_empty_is_stripped(tmp_path: Path) -> None:
    root = write_collection(
        tmp_path / "c",
        '{"_id": "a", "text": " body "}\n{"_id": 7, "title": "", "text": "seven"}\n\n{"_id": "t", "title": "T"}\n',
        '{"_id": "q", "text": "query"}\n{"_id": "unjudged", "text": "x"}\n',
        "query-id\tcorpus-id\tscore\nq\ta\t1\nq\t7\t0\n",
    )
    data = load_beir(root)
    assert data.document_text("a") == "body"
    assert data.document_text("7") == "seven"  # numeric ids become strings, like the qrels' ids
    assert data.document_text("t") == "T"
    assert data.queries == {"q": "query"}
    assert data.qrels == {"q": {"a": 1, "7": 0}}


def test_qrels_header_is_optional_and_integral_floats_are_grades(tmp_path: Path) -> None:
    root = write_collection(
        tmp_path / "c",
        '{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n',
        '{"_id": "q", "text": "q"}\n{"_id": "r", "text": "r"}\n',
        "q\ta\t1\nr b 2.0\n",
    )
    assert load_beir(root).qrels == {"q": {"a": 1}, "r": {"b": 2}}


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "message"),
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1\n",
         "corpus.jsonl:2: not a valid JSON line"),
        ('{"text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1\n", "corpus.jsonl:1: missing '_id'"),
        ('["a"]\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1\n", "corpus.jsonl:1: expected a JSON object"),
        ('{"_id": "a", "text": ["x"]}\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1\n", "'text' must be a string"),
        ('{"_id": "a", "text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\n", "test.tsv:2: expected"),
        ('{"_id": "a", "text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\thigh\n", "test.tsv:2: score 'high'"),
        ('{"_id": "a", "text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1.5\n", "score '1.5' is not"),
        ('{"_id": "a", "text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\n", "no relevance judgements"),
        ('{"_id": "a", "text": "x"}\n', '{"_id": "q", "text": "q"}\n', "h\nq9\ta\t1\n", "first: 'q9'"),
        ("\n", '{"_id": "q", "text": "q"}\n', "h\nq\ta\t1\n", "no documents"),
    ],
)  # fmt: skip
def test_malformed_collections(tmp_path: Path, corpus: str, queries: str, qrels: str, message: str) -> None:
    root = write_collection(tmp_path / "c", corpus, queries, qrels)
    with pytest.raises(DatasetError) as info:
        load_beir(root)
    assert message in str(info.value)


def test_missing_parts(tmp_path: Path, collection: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_beir(tmp_path / "missing")
    with pytest.raises(DatasetError, match=r"no qrels for split 'train' \(available: dev, test\)"):
        load_beir(collection, "train")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "corpus.jsonl").write_text('{"_id": "a"}\n')
    with pytest.raises(DatasetError, match=r"queries\.jsonl is missing"):
        load_beir(tmp_path / "half")


def test_download_unzips_into_the_cache_once(tmp_path: Path, collection: Path, monkeypatch) -> None:
    # A BEIR-style zip ("NAME/corpus.jsonl", ...) served from a file:// URL.
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "docs.zip", "w") as zf:
        for path in sorted(collection.rglob("*")):
            if path.is_file():
                zf.write(path, f"docs/{path.relative_to(collection).as_posix()}")
    monkeypatch.setenv("MXBAI_RERANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MXBAI_RERANK_BEIR_URL", server.as_uri())

    path, name = resolve_dataset("beir:docs")
    assert name == "docs" and path == tmp_path / "cache" / "beir" / "docs"
    assert load_beir(path).qrels == load_beir(collection).qrels
    assert [p.name for p in (tmp_path / "cache" / "beir").iterdir()] == ["docs"]  # no temporary leftovers

    (server / "docs.zip").unlink()  # the second use never downloads
    assert download_beir("docs") == path
    with pytest.raises(DatasetError, match="no sub-collection 'android'"):
        download_beir("docs/android")


def test_download_failures_are_clear(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MXBAI_RERANK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="invalid BEIR dataset name"):
        download_beir("../etc")
    monkeypatch.setenv("MXBAI_RERANK_BEIR_URL", "http://127.0.0.1:9/beir")
    with pytest.raises(DatasetError) as info:
        download_beir("scifact")
    message = str(info.value)
    assert "cannot download BEIR dataset 'scifact' from http://127.0.0.1:9/beir/scifact.zip" in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / "beir" / "scifact").exists()
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "bad.zip").write_bytes(b"not a zip")
    monkeypatch.setenv("MXBAI_RERANK_BEIR_URL", (tmp_path / "server").as_uri())
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        download_beir("bad")
