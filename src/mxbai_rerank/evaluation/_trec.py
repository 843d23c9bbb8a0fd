"""TREC run files: ``qid Q0 docid rank score tag``, one retrieved document per line.

In memory a run is a :data:`Ranking`: query id -> ``[(document id, score), ...]``, best first.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

Ranking = dict[str, list[tuple[str, float]]]

_TAG = re.compile(r"^\S+$")


class RunFileError(ValueError):
    """A run file that cannot be read or does not follow the TREC format."""


def read_trec_run(path: str | os.PathLike[str]) -> Ranking:
    """Read a TREC run file.

    As in ``trec_eval``, the order of a query's documents is by score (highest first) and the
    rank column is not used; equal scores keep their order in the file. A document listed twice
    for the same query is an error.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as exc:
        raise RunFileError(f"cannot read run file {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RunFileError(f"run file {str(path)!r} is not UTF-8 text") from exc
    entries: dict[str, list[tuple[str, float]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(lines, start=1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 6:
            raise RunFileError(
                f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}: {line.strip()!r}"
            )
        qid, _, doc_id, _, score_text, _ = cols
        try:
            score = float(score_text)
        except ValueError:
            raise RunFileError(f"{path}:{lineno}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise RunFileError(f"{path}:{lineno}: score {score_text!r} is not finite")
        if (qid, doc_id) in seen:
            raise RunFileError(
                f"{path}:{lineno}: document {doc_id!r} already listed for query {qid!r} on line {seen[qid, doc_id]}"
            )
        seen[qid, doc_id] = lineno
        entries.setdefault(qid, []).append((doc_id, score))
    if not entries:
        raise RunFileError(f"run file {str(path)!r} has no entries")
    # sorted() is stable: ties keep file order.
    return {qid: sorted(docs, key=lambda d: -d[1]) for qid, docs in entries.items()}


def write_trec_run(ranking: Ranking, path: str | os.PathLike[str], tag: str = "mxbai-rerank") -> Path:
    """Write ``ranking`` with ranks 1, 2, ... in the given order; scores round-trip exactly."""
    if not _TAG.match(tag):
        raise ValueError(f"run tag must be one word without spaces, got {tag!r}")
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in ranking.items():
            for rank, (doc_id, score) in enumerate(docs, start=1):
                out.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")
    return path
