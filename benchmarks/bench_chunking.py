"""What ``long_documents="chunk"`` costs against truncation, in documents per second on CPU.

The model is the v1 shape where chunking matters most (a 512-token window): a
DeBERTa-v3-xsmall-shaped cross-encoder (hidden 384, 12 layers; random weights: speed depends
on the shape). The work is 1 query x ``--docs`` documents of about ``--doc-tokens`` tokens of
real English (standard-library docstring sentences), scored with truncation and then with
chunking (default windows: what fits next to the query, 3/4 stride), plus the same documents
cut short enough to fit, for which both modes must give identical scores (checked; the script
exits non-zero otherwise).

    .venv/bin/python benchmarks/bench_chunking.py                 # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_chunking.py --doc-tokens 4000 --docs 16

Prints a Markdown table and writes ``benchmarks/results/chunking_cpu_v1_xsmall.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import CACHE, machine, sentence_pool  # noqa: E402

XSMALL = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6,
          "max_position_embeddings": 512}  # fmt: skip


def build_model() -> Path:
    import fixture_models

    path = CACHE / "deberta-xsmall-random"
    if not (path / "config.json").exists():
        fixture_models.build_deberta_reranker(path, XSMALL)
    return path


def long_documents(count_tokens, num_docs: int, doc_tokens: int) -> list[str]:
    sentences = sentence_pool()
    docs, start = [], 0
    for _ in range(num_docs):
        parts: list[str] = []
        while count_tokens(" ".join(parts)) < doc_tokens:
            parts.extend(sentences[start % len(sentences) : start % len(sentences) + 20])
            start += 20
        docs.append(" ".join(parts))
    return docs


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, np.asarray(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--doc-tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(HERE / "results" / "chunking_cpu_v1_xsmall.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from mxbai_rerank import MxbaiRerankV1

    reranker = MxbaiRerankV1(str(build_model()), device="cpu", torch_dtype="float32")
    count = lambda text: len(reranker.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # noqa: E731
    query = "How do I read a file line by line?"
    docs = long_documents(count, args.docs, args.doc_tokens)
    room = reranker.engine.encoder.document_room(query)
    short = [reranker.tokenizer.decode(reranker.tokenizer(d, add_special_tokens=False)["input_ids"][: room - 8])
             for d in docs[:8]]  # fmt: skip
    n_short = len(short)

    # Documents that fit must score the same either way.
    same = np.abs(reranker.score_pairs([query] * n_short, short) - reranker.score_pairs(
        [query] * n_short, short, long_documents="chunk")).max()  # fmt: skip
    if same > 1e-6:
        print(f"CHECK FAILED: documents that fit score differently with chunking (max |diff| {same:.2e})")
        return 1
    windows = len(reranker.encode_pairs([query] * len(docs), docs, long_documents="chunk"))

    rows = []
    for name, kwargs in (("truncate", {}), ("chunk (default windows)", {"long_documents": "chunk"}),
                         ("chunk, 256-token windows", {"long_documents": "chunk", "chunk_size": 256})):  # fmt: skip
        seconds, _ = timed(lambda kw=kwargs: reranker.score_pairs([query] * len(docs), docs, **kw), args.repeats)
        pairs = windows if kwargs.get("long_documents") and "chunk_size" not in kwargs else (
            len(reranker.encode_pairs([query] * len(docs), docs, **kwargs)))  # fmt: skip
        rows.append({"mode": name, "docs_per_s": len(docs) / seconds, "pairs_scored": pairs, "seconds": seconds})
    base = rows[0]["docs_per_s"]
    table = ["| mode | rows scored | docs/s | cost vs truncate |", "|---|---:|---:|---:|"]
    for row in rows:
        table.append(f"| {row['mode']} | {row['pairs_scored']} | {row['docs_per_s']:.1f} | "
                     f"{base / row['docs_per_s']:.1f}x |")  # fmt: skip
    text = "\n".join(table)
    print(f"{args.docs} documents of ~{args.doc_tokens} tokens, 1 query; v1 xsmall shape, float32, CPU; "
          f"documents that fit agree within {same:.1e}")  # fmt: skip
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"machine": machine(), "docs": args.docs, "doc_tokens": args.doc_tokens,
                                             "room": room, "rows": rows, "fit_max_abs_diff": float(same),
                                             "table": text}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
