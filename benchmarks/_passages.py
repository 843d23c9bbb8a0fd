"""Real English passages of mixed length, taken deterministically from Python's own docstrings.

Speed depends on token counts, not on weights, so benchmarks pair these passages with
random-weight models at the real shapes.
"""

from __future__ import annotations

import importlib
import inspect
import re

_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "gettext",
    "heapq", "http.client", "http.server", "imaplib", "inspect", "ipaddress", "itertools", "json", "logging",
    "mailbox", "multiprocessing", "os", "pathlib", "pickle", "pprint", "random", "re", "sched", "shutil",
    "smtplib", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "xml.dom.minidom", "zipfile",
)  # fmt: skip


def docstring_passages(min_chars: int = 80) -> list[str]:
    """Every distinct docstring (whitespace folded) of the modules above and their members."""
    seen: dict[str, None] = {}
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = [module, *(obj for _, obj in sorted(vars(module).items()) if not _.startswith("_"))]
        for obj in objects:
            doc = inspect.getdoc(obj) if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj) else None
            if doc and str(getattr(obj, "__module__", name) or "").startswith(name.split(".")[0]):
                text = re.sub(r"\s+", " ", doc).strip()
                if len(text) >= min_chars and "Copyright" not in text:
                    seen.setdefault(text, None)
    return list(seen)


# Token lengths of the benchmark's 32 passages: mostly short, a long tail (mean ~125, max ~460),
# the mix a first-stage retriever returns from a corpus of web-style passages.
TARGET_TOKENS = (
    24, 30, 36, 40, 44, 48, 54, 60, 66, 72, 78, 84, 90, 94, 98, 102,
    106, 112, 118, 124, 130, 136, 144, 152, 162, 172, 186, 200, 220, 250, 310, 460,
)  # fmt: skip


def mixed_length_passages(count_tokens, targets: tuple[int, ...] = TARGET_TOKENS) -> list[str]:
    """For each target length, the unused docstring whose token count is closest to it."""
    candidates = sorted(((count_tokens(p), p) for p in docstring_passages()), key=lambda x: (x[0], x[1]))
    chosen: list[str] = []
    used: set[str] = set()
    for target in targets:
        best = min((c for c in candidates if c[1] not in used), key=lambda c: (abs(c[0] - target), c[1]))
        used.add(best[1])
        chosen.append(best[1])
    return chosen
