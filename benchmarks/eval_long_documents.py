"""nDCG@10 with truncation against chunking, on a generated collection of documents longer than the window.

No real weights can be downloaded here, and a random-weight model ranks at random, so the model
is made for the task, with this package's own tools: the tiny Qwen2 test model (v2 family,
real Qwen2 vocabulary) is fine-tuned by ``mxbai-rerank train`` (contrastive stage, LoRA
merged) on a keyword task with window-sized documents: a document is relevant when it contains
the query's keyword. The collection then hides that keyword deep in long documents:

* every query has 20 candidate documents of ``--doc-words`` filler words; one or two are
  relevant and carry the query's keyword (three times, within a few words) at a random place
  after the first window; the others carry no keyword (the tiny model cannot learn to tell the
  query's keyword from another one: it reaches ~0.6 nDCG@10 on short documents when the
  negatives carry other keywords, see tests/training), so the task is deliberately easy;
* the first stage is a TREC run listing each query's candidates in random order, so every
  number below is the reranker's alone;
* ``mxbai-rerank eval --max-length 25`` scores the candidates twice: ``truncate`` (the
  reranker sees the start of each document, where no keyword is) and ``--long-documents chunk``
  (overlapping windows, the document's score is its best window's).

    .venv/bin/python benchmarks/eval_long_documents.py        # ~3 minutes on 2 cores

Prints a Markdown table and writes ``benchmarks/results/long_documents.json``. The same
collection with the keyword inside the first window is the control: there truncation must rank
well (the model learned the task), and on the main collection chunking must beat truncation by
0.3 nDCG@10; the script exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import CACHE, machine  # noqa: E402

from training import synthetic  # noqa: E402

# The fine-tuning tests' keyword task vocabulary (tests/training/synthetic.py).
KEYWORDS = synthetic.KEYWORDS[:20]
FILLER = synthetic.FILLER
CLI = [sys.executable, "-c", "from mxbai_rerank.cli import main; main()"]


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(FILLER) for _ in range(n)]


def _with_keyword(words: list[str], keyword: str, at: int, rng: random.Random) -> list[str]:
    """``words`` with ``keyword`` three times within the 8 words from position ``at``."""
    out = list(words)
    for offset in sorted(rng.sample(range(8), 3), reverse=True):
        out.insert(min(at + offset, len(out)), keyword)
    return out


def training_records(num_queries: int, seed: int) -> list[dict[str, Any]]:
    """Documents of 10-16 words (about a window): the positive has the query's keyword, the negatives none."""
    rng = random.Random(seed)
    records = []
    for _ in range(num_queries):
        keyword = rng.choice(KEYWORDS)

        def doc(kw: str | None) -> str:
            # Same length with or without the keyword, so length says nothing about relevance.
            n = rng.randint(10, 16)
            if kw is None:
                return " ".join(_words(rng, n))
            words = _words(rng, n - 3)
            return " ".join(_with_keyword(words, kw, rng.randrange(len(words)), rng))

        negatives = [doc(None) for _ in range(7)]
        records.append(
            {"query": " ".join([keyword, *rng.sample(FILLER, 2)]), "positive": doc(keyword), "negatives": negatives}
        )
    return records


def long_collection(root: Path, *, num_queries: int, doc_words: int, skip_words: int, seed: int) -> Path:
    """A BEIR folder and ``run.trec``: keywords after ``skip_words`` words (0: within the first 12 words)."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels, run = [], [], ["query-id\tcorpus-id\tscore"], []
    for q in range(num_queries):
        keyword = KEYWORDS[q % len(KEYWORDS)]
        queries.append({"_id": f"q{q}", "text": " ".join([keyword, *rng.sample(FILLER, 2)])})
        relevant = rng.randint(1, 2)
        ids = []
        for d in range(20):
            kw = keyword if d < relevant else None
            words = _words(rng, doc_words)
            if kw is not None:
                at = rng.randrange(skip_words, doc_words - 8) if skip_words else rng.randrange(0, 4)
                words = _with_keyword(words, kw, at, rng)
            doc_id = f"q{q}d{d}"
            corpus.append({"_id": doc_id, "title": "", "text": " ".join(words)})
            ids.append(doc_id)
            if d < relevant:
                qrels.append(f"q{q}\t{doc_id}\t1")
        rng.shuffle(ids)
        run += [f"q{q} Q0 {doc_id} {rank + 1} {20 - rank} shuffled" for rank, doc_id in enumerate(ids)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    (root / "run.trec").write_text("\n".join(run) + "\n", encoding="utf-8")
    return root


def train_model(work: Path, seed: int) -> Path:
    import fixture_models

    base = CACHE / "tiny-qwen2-reranker"
    if not (base / "config.json").exists():
        fixture_models.build_qwen2_reranker(base)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in training_records(256, seed)), encoding="utf-8")
    output = work / "keyword-reranker"
    command = [
        *CLI, "train", "--model", str(base), "--data", str(data), "--stages", "contrastive", "--lora",
        "--lora-rank", "8", "--lora-alpha", "16", "--lr", "3e-3", "--max-steps", "200", "--batch-size", "32",
        "--mine", "none", "--device", "cpu", "--seed", str(seed), "--output", str(output),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return output


def evaluate(model: Path, collection: Path, out: Path, max_length: int, chunk: bool) -> dict[str, Any]:
    command = [
        *CLI, "eval", "--model", str(model), "--dataset", str(collection), "--first-stage",
        str(collection / "run.trec"), "--top-k", "20", "--max-length", str(max_length), "--dtype", "float32",
        "--device", "cpu", "--output", str(out),
    ]  # fmt: skip
    if chunk:
        command += ["--long-documents", "chunk"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": time.perf_counter() - started, "metrics": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--doc-words", type=int, default=120)
    parser.add_argument(
        "--max-length", type=int, default=25, help="the window (query + document tokens; 25: ~14 document tokens)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=CACHE / "long-documents")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "long_documents.json")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    model = train_model(args.work, args.seed)
    rows = []
    for name, skip in (("keyword past the window", args.max_length), ("keyword in the first window (control)", 0)):
        collection = long_collection(
            args.work / f"collection-{skip}",
            num_queries=args.queries,
            doc_words=args.doc_words,
            skip_words=skip,
            seed=args.seed + 1,
        )
        result = {"collection": name}
        for mode in ("truncate", "chunk"):
            run = evaluate(model, collection, args.work / f"out-{skip}-{mode}", args.max_length, mode == "chunk")
            result[mode] = run
        rows.append(result)

    def metric(run: dict[str, Any], key: str) -> float:
        return float(run["metrics"]["reranked"][key])

    print(
        f"\nTiny v2 model fine-tuned on the keyword task; {args.queries} queries x 20 documents of "
        f"{args.doc_words} words; window {args.max_length} tokens; first stage in random order.\n"
    )
    print("| collection | first stage nDCG@10 | truncate nDCG@10 | chunk nDCG@10 | truncate MRR@10 | chunk MRR@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        first = float(row["truncate"]["metrics"]["first_stage"]["ndcg@10"])
        print(
            f"| {row['collection']} | {first:.3f} | {metric(row['truncate'], 'ndcg@10'):.3f} | "
            f"{metric(row['chunk'], 'ndcg@10'):.3f} | {metric(row['truncate'], 'mrr@10'):.3f} | "
            f"{metric(row['chunk'], 'mrr@10'):.3f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": machine(),
                "args": vars(args) | {"work": str(args.work), "output": str(args.output)},
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    # The run proves something only if the model learned the task (it ranks well where it can see
    # the keyword) and chunking finds what truncation cannot.
    past, control = rows
    if metric(control["truncate"], "ndcg@10") < 0.8:
        print("the fine-tuned model did not learn the keyword task (control, truncate)", file=sys.stderr)
        return 1
    if metric(past["chunk"], "ndcg@10") - metric(past["truncate"], "ndcg@10") < 0.3:
        print("chunking did not find the keywords truncation misses", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
