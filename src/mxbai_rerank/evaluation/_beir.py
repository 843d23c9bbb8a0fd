"""BEIR-format collections: loading a directory, and downloading the public BEIR zips.

Layout of a collection directory::

    DIR/corpus.jsonl         one {"_id", "title", "text"} object per line
    DIR/queries.jsonl        one {"_id", "text"} object per line
    DIR/qrels/<split>.tsv    a header line, then "query-id<TAB>corpus-id<TAB>score" rows

As in BEIR's own loader, the queries of a split are exactly the query ids of its qrels.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
# Environment overrides: the cache root (default ~/.cache/mxbai-rerank) and the download base URL.
CACHE_ENV = "MXBAI_RERANK_CACHE"
BEIR_URL_ENV = "MXBAI_RERANK_BEIR_URL"
_BEIR_PREFIX = "beir:"
# "scifact", "cqadupstack/android": a zip name and an optional sub-collection inside it.
_BEIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_DOWNLOAD_TIMEOUT_S = 30.0


class DatasetError(ValueError):
    """A collection that is missing, malformed or cannot be downloaded."""


@dataclass
class BeirDataset:
    """One split of a BEIR-format collection, held in memory.

    ``corpus`` maps a document id to ``(title, text)`` in file order; ``queries`` holds the
    split's queries (the query ids of its qrels, in qrels order); ``qrels`` maps a query id to
    ``{document id: graded relevance}``.
    """

    name: str
    path: Path
    split: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    info: dict[str, Any] = field(default_factory=dict)

    def document_text(self, doc_id: str) -> str:
        """What a reranker sees: ``title + " " + text``, stripped (BEIR's reranking input)."""
        title, text = self.corpus[doc_id]
        return f"{title} {text}".strip()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "split": self.split,
            "num_queries": len(self.queries),
            "num_documents": len(self.corpus),
            "num_qrels": sum(len(docs) for docs in self.qrels.values()),
            **self.info,
        }


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a :class:`DatasetError` names the bad line."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:  # also UnicodeDecodeError
                raise DatasetError(f"{path}:{lineno}: not a valid JSON line ({exc})") from exc
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _string_field(obj: dict[str, Any], key: str, path: Path, lineno: int, *, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DatasetError(f"{path}:{lineno}: missing {key!r}")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f"{path}:{lineno}: {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def _read_corpus(path: Path) -> dict[str, tuple[str, str]]:
    corpus: dict[str, tuple[str, str]] = {}
    duplicates = 0
    for lineno, obj in _jsonl_objects(path):
        doc_id = _string_field(obj, "_id", path, lineno, required=True)
        title = _string_field(obj, "title", path, lineno, required=False)
        text = _string_field(obj, "text", path, lineno, required=False)
        duplicates += doc_id in corpus
        corpus[doc_id] = (title, text)
    if duplicates:
        logger.warning("%s: %d duplicate document id(s); the last occurrence of each is used", path, duplicates)
    if not corpus:
        raise DatasetError(f"{path}: no documents")
    return corpus


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in _jsonl_objects(path):
        queries[_string_field(obj, "_id", path, lineno, required=True)] = _string_field(
            obj, "text", path, lineno, required=True
        )
    return queries


def _relevance(score: str) -> int | None:
    try:
        return int(score)
    except ValueError:
        pass
    try:
        value = float(score)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        relevance = _relevance(cols[-1].strip()) if len(cols) == 3 else None
        if relevance is None and lineno == 1:
            continue  # the header, "query-id corpus-id score" (optional)
        if len(cols) != 3:
            raise DatasetError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
        qid, doc_id, score = (c.strip() for c in cols)
        if relevance is None:
            raise DatasetError(f"{path}:{lineno}: score {score!r} is not an integer")
        qrels.setdefault(qid, {})[doc_id] = relevance
    if not qrels:
        raise DatasetError(f"{path}: no relevance judgements")
    return qrels


def load_beir(path: str | os.PathLike[str], split: str = "test", *, name: str | None = None) -> BeirDataset:
    """Load one split of a BEIR-format collection directory."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset directory {str(root)!r} does not exist"
            if not root.exists()
            else f"dataset path {str(root)!r} is not a directory"
        )
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (root / required).is_file():
            raise DatasetError(f"{root} is not a BEIR-format collection: {required} is missing")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        hint = f"available: {', '.join(available)}" if available else "no qrels/*.tsv files found"
        raise DatasetError(f"{root}: no qrels for split {split!r} ({hint})")
    qrels = _read_qrels(qrels_path)
    all_queries = _read_queries(root / "queries.jsonl")
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise DatasetError(
            f"{qrels_path}: {len(missing)} query id(s) have no text in queries.jsonl (first: {missing[0]!r})"
        )
    corpus = _read_corpus(root / "corpus.jsonl")
    queries = {qid: all_queries[qid] for qid in qrels}
    logger.info("loaded %s/%s: %d queries, %d documents", root, split, len(queries), len(corpus))
    return BeirDataset(name=name or root.name, path=root, split=split, corpus=corpus, queries=queries, qrels=qrels)


def cache_root() -> Path:
    """Where downloaded collections live: ``$MXBAI_RERANK_CACHE/beir`` or ``~/.cache/mxbai-rerank/beir``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "mxbai-rerank")
    return Path(base) / "beir"


def _download(url: str, dest: Path, show_progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not show_progress
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def download_beir(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    show_progress: bool = False,
) -> Path:
    """The directory of public BEIR collection ``name`` (e.g. ``scifact``, ``cqadupstack/android``),
    downloaded and unzipped into the cache on first use."""
    if not _BEIR_NAME.match(name):
        raise DatasetError(f"invalid BEIR dataset name {name!r} (expected e.g. 'scifact' or 'cqadupstack/android')")
    zip_name, _, subset = name.partition("/")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / zip_name
    if not target.is_dir():
        base = base_url or os.environ.get(BEIR_URL_ENV) or BEIR_URL
        url = f"{base.rstrip('/')}/{zip_name}.zip"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot create the dataset cache {root}: {exc.strerror or exc}") from exc
        # Download and unzip next to the target, then rename: an interrupted download never
        # leaves a half-written collection in the cache.
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{zip_name}-") as tmp:
            archive = Path(tmp) / f"{zip_name}.zip"
            logger.info("downloading %s", url)
            try:
                _download(url, archive, show_progress)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DatasetError(
                    f"cannot download BEIR dataset {zip_name!r} from {url}: {reason} "
                    f"(offline? unzip it into {root} by hand, or pass its directory)"
                ) from exc
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(Path(tmp) / "x")
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{url} is not a readable zip archive: {exc}") from exc
            entries = list((Path(tmp) / "x").iterdir())
            unpacked = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp) / "x"
            shutil.move(str(unpacked), str(target))
    path = target / subset if subset else target
    if not path.is_dir():
        raise DatasetError(f"BEIR dataset {zip_name!r} has no sub-collection {subset!r}")
    return path


def resolve_dataset(spec: str | os.PathLike[str], *, show_progress: bool = False) -> tuple[Path, str]:
    """``(directory, name)`` for a collection directory or ``beir:NAME``."""
    text = os.fspath(spec)
    if text.startswith(_BEIR_PREFIX):
        name = text[len(_BEIR_PREFIX) :]
        return download_beir(name, show_progress=show_progress), name
    path = Path(text).expanduser()
    return path, path.name
