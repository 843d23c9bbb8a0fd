"""A small BEIR-format collection made from real text: Python standard-library docstrings.

Each query is the first sentence of a function's or class's docstring; its relevant document
(relevance 2) is the rest of that docstring, titled with the qualified name, and the docstring
of its module is partly relevant (relevance 1). Docstrings beyond the query budget stay in the
corpus as distractors. Also the independent, textbook metric definitions the tests compare
the package's (ranx-computed) metrics against.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from pathlib import Path

MODULES = (
    "base64", "bisect", "calendar", "copy", "csv", "difflib", "fnmatch", "functools", "glob", "gzip", "heapq",
    "ipaddress", "itertools", "json", "operator", "shlex", "shutil", "statistics", "string", "tempfile",
    "textwrap", "uuid", "zipfile",
)  # fmt: skip
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s+|$)(.*)$", re.S)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _split(doc: str) -> tuple[str, str] | None:
    """(first sentence, rest) of a docstring with a real first sentence and some body text."""
    match = _FIRST_SENTENCE.match(_clean(doc))
    if not match:
        return None
    first, rest = match.group(1), match.group(2)
    if len(first.split()) < 4 or len(rest.split()) < 8:
        return None
    return first, rest


def docstring_items() -> list[tuple[str, str, str, str]]:
    """(module, qualified name, first sentence, rest) in a fixed order."""
    items = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            parts = _split(inspect.getdoc(obj) or "")
            if parts:
                items.append((name, f"{name}.{attr}", *parts))
    return items


def build_docstring_beir(root: Path, *, num_queries: int = 40, num_distractors: int = 60) -> Path:
    """Write the collection to ``root`` (splits: ``test`` with ``num_queries`` queries, ``dev`` with 5)."""
    items = docstring_items()
    assert len(items) >= num_queries + num_distractors, len(items)
    # Every other item is a query, so queries come from all modules; distractors follow.
    queried = items[0 : 2 * num_queries : 2]
    distractors = items[1 : 2 * num_queries : 2] + items[2 * num_queries : 2 * num_queries + num_distractors]
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus, queries, qrels = [], [], []
    modules = sorted({item[0] for item in queried + distractors})
    for module in modules:
        text = _clean(inspect.getdoc(importlib.import_module(module)) or f"The {module} module.")
        corpus.append({"_id": f"m-{module}", "title": module, "text": text})
    for i, (module, qualname, first, rest) in enumerate(queried):
        corpus.append({"_id": f"d{i}", "title": qualname, "text": rest})
        queries.append({"_id": f"q{i}", "text": first})
        qrels.append((f"q{i}", f"d{i}", 2))
        qrels.append((f"q{i}", f"m-{module}", 1))
    for j, (_, qualname, first, rest) in enumerate(distractors):
        corpus.append({"_id": f"x{j}", "title": qualname, "text": f"{first} {rest}"})
    # Judged non-relevant rows, as some BEIR qrels have.
    qrels += [(f"q{i}", f"x{i}", 0) for i in range(0, num_queries, 7)]
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(doc) + "\n" for doc in corpus)
    with (root / "queries.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(q) + "\n" for q in queries)
    test_rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test_rows, encoding="utf-8")
    dev_rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels if q in {f"q{i}" for i in range(5)})
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + dev_rows, encoding="utf-8")
    return root


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc_id, score = line.split("\t")
        qrels.setdefault(qid, {})[doc_id] = int(score)
    return qrels


def read_run_lines(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text(encoding="utf-8").splitlines()]


def run_order(rows: list[list[str]]) -> dict[str, list[str]]:
    """query id -> document ids by the rank column."""
    out: dict[str, list[tuple[int, str]]] = {}
    for qid, _, doc_id, rank, _, _ in rows:
        out.setdefault(qid, []).append((int(rank), doc_id))
    return {qid: [d for _, d in sorted(docs)] for qid, docs in out.items()}


# -- textbook metric definitions (linear gain nDCG as in trec_eval) --------------------------
def ndcg_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {d for d, r in judged.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def reference_metrics(
    qrels: dict[str, dict[str, int]], ranking: dict[str, list[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(means, per query) of nDCG@10, MRR@10 and Recall@100 over every judged query."""
    per_query = {
        qid: {
            "ndcg@10": ndcg_at(ranking.get(qid, []), judged, 10),
            "mrr@10": mrr_at(ranking.get(qid, []), judged, 10),
            "recall@100": recall_at(ranking.get(qid, []), judged, 100),
        }
        for qid, judged in qrels.items()
    }
    means = {m: sum(v[m] for v in per_query.values()) / len(per_query) for m in ("ndcg@10", "mrr@10", "recall@100")}
    return means, per_query
