"""A synthetic, learnable relevance task: a document is relevant when it contains the query's keyword.

Queries name one keyword from a fixed list (plus two filler words); every document is a few
filler words, and the relevant one also contains the query's keyword (three times). With
``hard > 0`` that share of the negatives contains another keyword, so that spotting a keyword is
not enough (the tiny test model learns that much more slowly; the tests use ``hard=0``). An
untrained reranker ranks these at random; a trained one ranks the relevant document first.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

KEYWORDS = (
    "walrus", "obsidian", "saffron", "tundra", "mongoose", "quartz", "lantern", "glacier", "pelican", "cobalt",
    "falcon", "meadow", "harpoon", "jasmine", "volcano", "anchor", "badger", "canyon", "dolphin", "emerald",
    "ferret", "granite", "hazel", "iguana", "juniper", "kettle", "lobster", "marble", "nectar", "orchid",
)  # fmt: skip
FILLER = (
    "the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from", "this",
    "that", "it", "are", "be", "or", "an", "which", "one", "all", "there", "their", "has", "more", "some",
)  # fmt: skip

REPEAT = 3  # times a keyword occurs in a document that has one


def _doc(rng: random.Random, keyword: str | None) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 10))]
    for _ in range(REPEAT if keyword is not None else 0):
        words.insert(rng.randrange(len(words) + 1), keyword)
    return " ".join(words)


def make_groups(num_queries: int, num_negatives: int, seed: int, hard: float = 0.0) -> list[dict[str, Any]]:
    """``{"query", "positive", "negatives"}`` records; a ``hard`` share of the negatives contain another keyword."""
    rng = random.Random(seed)
    records = []
    for _ in range(num_queries):
        keyword = rng.choice(KEYWORDS)
        others = [k for k in KEYWORDS if k != keyword]
        negatives = [_doc(rng, rng.choice(others) if rng.random() < hard else None) for _ in range(num_negatives)]
        query = " ".join([keyword, *rng.sample(FILLER, 2)])  # distinct queries around one keyword
        records.append({"query": query, "positive": _doc(rng, keyword), "negatives": negatives})
    return records


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_beir(records: list[dict[str, Any]], root: Path, split: str = "train") -> Path:
    """The records as a BEIR folder: every document in the corpus, relevance 1 for positives."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for q, record in enumerate(records):
        queries.append({"_id": f"q{q}", "text": record["query"]})
        docs = [(record["positive"], 1)] + [(d, 0) for d in record["negatives"]]
        for d, (text, rel) in enumerate(docs):
            corpus.append({"_id": f"q{q}d{d}", "title": "", "text": text})
            if rel:
                qrels.append(f"q{q}\tq{q}d{d}\t{rel}")
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return root
