"""The README's framework snippets run as written (the model name swapped for the tiny fixture)
and rank like the library.

The snippets load the model with the library's automatic dtype (bf16 on CPUs with native bf16
math), so each is compared with the library's ranking by the reranker that snippet loaded.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from _integration_data import library_ranking

README = Path(__file__).parents[2] / "README.md"
MODEL_NAME = "mixedbread-ai/mxbai-rerank-base-v2"
QUERY = "Who wrote 'To Kill a Mockingbird'?"


def _snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## RAG frameworks (LangChain, LlamaIndex, Haystack)\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def _run(snippet: str, model_dir: Path) -> tuple[dict[str, Any], list[tuple[float, str]]]:
    assert MODEL_NAME in snippet
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.replace(MODEL_NAME, str(model_dir)), str(README), "exec"), namespace)
    printed = [line.split(" ", 1) for line in out.getvalue().splitlines()]
    return namespace, [(float(score), text) for score, text in printed]


def _check(printed: list[tuple[float, str]], reranker: Any, texts: list[str], top_n: int) -> None:
    assert reranker is not None
    want = library_ranking(reranker, texts, top_n, query=QUERY)
    assert [text for _, text in printed] == [texts[i] for i, _ in want]
    assert [score for score, _ in printed] == pytest.approx([s for _, s in want], abs=1e-3)


def test_three_snippets() -> None:
    assert len(_snippets()) == 3


def test_langchain_snippet(v2_model_dir: Path) -> None:
    namespace, printed = _run(_snippets()[0], v2_model_dir)
    _check(printed, namespace["compressor"].reranker, [d.page_content for d in namespace["docs"]], 2)


def test_llamaindex_snippet(v2_model_dir: Path) -> None:
    namespace, printed = _run(_snippets()[1], v2_model_dir)
    _check(printed, namespace["reranker"].reranker, [n.node.get_content() for n in namespace["nodes"]], 2)


def test_haystack_snippet(v2_model_dir: Path) -> None:
    namespace, printed = _run(_snippets()[2], v2_model_dir)
    pipeline = namespace["pipeline"]
    retrieved = pipeline.get_component("retriever").run(query=QUERY)["documents"]
    assert len(retrieved) >= 2
    _check(printed, pipeline.get_component("ranker").reranker, [d.content for d in retrieved], 2)
    assert namespace["loaded"].to_dict() == namespace["pipeline"].to_dict()
