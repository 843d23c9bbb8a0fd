"""Real English text for benchmarks: sentences from Python standard-library docstrings.

The text ships with every Python, needs no download, and reads like technical documentation
(the domain of many retrieval workloads). Documents get a mixed length distribution so that
padding and token-budget batching behave as on real collections.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "http.client", "http.cookies", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging",
    "mailbox", "mimetypes", "operator", "optparse", "os", "pathlib", "pickle", "platform", "poplib", "pprint",
    "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil", "smtplib", "socket",
    "socketserver", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid",
    "warnings", "weakref", "xml.dom.minidom", "zipfile",
)  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class Workload:
    """Queries and, for each, the documents to rank."""

    queries: list[str]
    documents: list[list[str]]


def _docstrings() -> list[str]:
    docs: list[str] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a platform without e.g. ssl-backed modules
            continue
        docs.append(inspect.getdoc(module) or "")
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            docs.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                for _, method in sorted(vars(obj).items()):
                    if inspect.isfunction(method) and not method.__name__.startswith("_"):
                        docs.append(inspect.getdoc(method) or "")
    return docs


def _prose_paragraphs(doc: str) -> list[str]:
    """Paragraphs of running text: no doctests, code blocks or argument tables."""
    out = []
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if not lines or any(line.startswith((" ", "\t", ">>>", "...", "$")) for line in lines):
            continue
        out.append(" ".join(line.strip() for line in lines))
    return out


def _is_sentence(text: str) -> bool:
    words = _WORD.findall(text)
    if not 5 <= len(words) <= 60 or not text[0].isupper() or not text.endswith("."):
        return False
    letters = sum(len(w) for w in words)
    return letters >= 0.7 * len(text.replace(" ", ""))


@functools.lru_cache(maxsize=1)
def stdlib_sentences() -> tuple[str, ...]:
    """English sentences from standard-library docstrings, deduplicated, in a fixed order.

    Sentences of one docstring stay adjacent, so consecutive sentences read as one passage.
    """
    seen: dict[str, None] = {}
    for doc in _docstrings():
        for paragraph in _prose_paragraphs(doc):
            for sentence in _SENTENCE_END.split(paragraph):
                sentence = sentence.strip()
                if _is_sentence(sentence):
                    seen.setdefault(sentence)
    return tuple(seen)


def _passage(rng: random.Random, sentences: Sequence[str]) -> str:
    # Half short (1-2 sentences), a third medium (3-8), the rest long (10-40): roughly 15 to
    # 1000 tokens, a long tail like web and documentation collections.
    draw = rng.random()
    count = rng.randint(1, 2) if draw < 0.5 else rng.randint(3, 8) if draw < 0.85 else rng.randint(10, 40)
    start = rng.randrange(len(sentences))
    return " ".join(sentences[(start + i) % len(sentences)] for i in range(count))


def generate_workload(num_queries: int, docs_per_query: int, *, seed: int = 0) -> Workload:
    """``num_queries`` one-sentence queries, each with ``docs_per_query`` passages of mixed length."""
    if num_queries <= 0 or docs_per_query <= 0:
        raise ValueError("num_queries and docs_per_query must be positive")
    sentences = stdlib_sentences()
    rng = random.Random(seed)
    short = [s for s in sentences if len(s.split()) <= 20]
    queries = [rng.choice(short) for _ in range(num_queries)]
    documents = [[_passage(rng, sentences) for _ in range(docs_per_query)] for _ in range(num_queries)]
    return Workload(queries, documents)


def workload_from_documents(pool: Sequence[str], num_queries: int, docs_per_query: int, *, seed: int = 0) -> Workload:
    """Generated queries, each with ``docs_per_query`` documents drawn from ``pool``
    (without replacement while the pool is large enough)."""
    if not pool:
        raise ValueError("the document pool is empty")
    if num_queries <= 0 or docs_per_query <= 0:
        raise ValueError("num_queries and docs_per_query must be positive")
    rng = random.Random(seed)
    queries = generate_workload(num_queries, 1, seed=seed).queries
    documents = []
    for _ in range(num_queries):
        if docs_per_query <= len(pool):
            documents.append(rng.sample(list(pool), docs_per_query))
        else:
            documents.append([rng.choice(pool) for _ in range(docs_per_query)])
    return Workload(queries, documents)
