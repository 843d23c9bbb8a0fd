"""A real ``mxbai-rerank serve`` process (tiny v2 model) driven by the mixedbread and cohere SDKs and raw HTTP.

The served checkpoint is the ``v2_model_dir`` fixture with NaN embeddings for the tokens of
``POISON`` only: every request that contains it fails inside the model, every other request
scores exactly as the unmodified ``v2_reranker`` fixture (test documents are ASCII).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cohere
import httpx
import mixedbread
import pytest
from _server_process import ServerProcess, host_port, metric, read_response, request_head, start_server
from safetensors.torch import load_file, save_file

# The README's examples use this key and model name (test_readme_serving_examples_run_as_written).
API_KEY = "secret"
README_MODEL = "mixedbread-ai/mxbai-rerank-base-v2"
ALIASES = ("mxbai-rerank-tiny", "rerank-tiny-alias", README_MODEL)
MAX_DOCS = 40
POISON = "☃☃☃"
ATOL = 1e-4
# A traceback as logging prints it: the header line, then indented frame lines.
_TRACEBACK = r"\nTraceback \(most recent call last\):\n(?:[ \t].*\n)+"

QUERY = "Who wrote 'To Kill a Mockingbird'?"
DOCS = [
    "'To Kill a Mockingbird' is a novel by Harper Lee published in 1960.",
    "The novel 'Moby-Dick' was written by Herman Melville.",
    "Harper Lee was an American novelist widely known for To Kill a Mockingbird.",
    "Jane Austen was an English novelist known primarily for her six major novels.",
    "The Catcher in the Rye is a novel by J. D. Salinger.",
    "A mockingbird is a bird that copies the songs of other birds.",
]
OBJECTS = [
    {"title": "To Kill a Mockingbird", "meta": {"body": "A novel by Harper Lee.", "year": 1960}},
    {"title": "Moby-Dick", "meta": {"body": "Herman Melville's whale story.", "year": 1851}},
    {"title": "Birds of America", "meta": {"body": "Mockingbirds copy other birds.", "year": 1827}},
]


@pytest.fixture(scope="module")
def poisoned_model_dir(v2_model_dir: Path, v2_reranker: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("poisoned") / "tiny-qwen2-poisoned"
    shutil.copytree(v2_model_dir, path)
    clean = set(v2_reranker.encode_pairs(["q"], ["a b"]).input_ids[0])
    poison_ids = sorted(set(v2_reranker.encode_pairs(["q"], [f"a {POISON} b"]).input_ids[0]) - clean)
    assert poison_ids
    tensors = load_file(path / "model.safetensors")
    tensors["model.embed_tokens.weight"][poison_ids] = float("nan")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def server(poisoned_model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(
        poisoned_model_dir,
        "--served-model-name",
        ALIASES[0],
        "--served-model-name",
        ALIASES[1],
        "--served-model-name",
        ALIASES[2],
        # API key and request limit through the environment: the CLI's envvar wiring is tested too.
        env={"MXBAI_RERANK_API_KEY": API_KEY, "MXBAI_RERANK_MAX_CLIENT_BATCH_SIZE": str(MAX_DOCS)},
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def assert_same_ranking(got: Sequence[tuple[int, float]], expected: Sequence[Any], atol: float = ATOL) -> None:
    """``got`` (index, score) best first agrees with library ``RankResult``s: same documents and scores."""
    want = {r.index: r.score for r in expected}
    assert sorted(i for i, _ in got) == sorted(want)
    for index, score in got:
        assert abs(score - want[index]) <= atol, (index, score, want[index])
    # Best first: the order may differ from the library's only between (near) ties.
    for (a, _), (b, _) in itertools.pairwise(got):
        assert want[a] >= want[b] - atol


def _real_tokens(encoded: Any) -> int:
    return sum(len(ids) for ids in encoded.input_ids)


def _expected(reranker: Any, query: str, docs: Sequence[Any], **kwargs: Any) -> list[Any]:
    kwargs.setdefault("normalize", True)
    kwargs.setdefault("top_k", len(docs))
    return reranker.rank(query, list(docs), **kwargs)


def test_models_health_metrics_and_docs(server: ServerProcess, client: httpx.Client, poisoned_model_dir: Path) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [str(poisoned_model_dir), *ALIASES]
    anonymous = httpx.get(f"{server.base_url}/health")
    assert anonymous.status_code == 200 and anonymous.json()["status"] == "ok"
    scraped = httpx.get(f"{server.base_url}/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert metric(scraped.text, "mxbai_rerank_model_info") == 1.0
    # /metrics is public: it names the served id, never the model's local path.
    assert str(poisoned_model_dir) not in scraped.text and str(poisoned_model_dir.parent) not in scraped.text
    assert f'model="{ALIASES[0]}"' in scraped.text
    # The docs page and the schema it loads are public too (the page cannot send a key).
    docs = httpx.get(f"{server.base_url}/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    schema = httpx.get(f"{server.base_url}/openapi.json")
    assert schema.status_code == 200
    assert {"/v1/reranking", "/v2/rerank", "/v1/rerank", "/rerank", "/v1/models"} <= set(schema.json()["paths"])


def test_api_key_is_required_everywhere_but_health_metrics_and_docs(server: ServerProcess) -> None:
    requests = [
        ("POST", "/v1/reranking", {"query": "q", "input": ["a"]}),
        ("POST", "/v2/rerank", {"query": "q", "documents": ["a"]}),
        ("POST", "/v1/rerank", {"query": "q", "documents": ["a"]}),
        ("POST", "/rerank", {"query": "q", "texts": ["a"]}),
        ("GET", "/v1/models", None),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
        for method, path, body in requests:
            response = httpx.request(method, f"{server.base_url}{path}", json=body, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert "API key" in response.json()["message"] and response.headers["x-request-id"]
            assert response.json()["error_type"] == "auth"
    mxb = mixedbread.Mixedbread(api_key="wrong-key", base_url=server.base_url, max_retries=0)
    with pytest.raises(mixedbread.AuthenticationError):
        mxb.rerank(query="q", input=["a"])
    co = cohere.ClientV2(api_key="wrong-key", base_url=server.base_url)
    with pytest.raises(cohere.errors.UnauthorizedError):
        co.rerank(model=ALIASES[0], query="q", documents=["a"])


def test_mixedbread_sdk_strings_match_the_library(server: ServerProcess, v2_reranker: Any) -> None:
    mxb = mixedbread.Mixedbread(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    result = mxb.rerank(model=ALIASES[0], query=QUERY, input=DOCS, return_input=True)
    expected = _expected(v2_reranker, QUERY, DOCS)
    assert result.model == ALIASES[0] and result.object == "list"
    assert result.top_k == len(DOCS) and result.return_input is True
    assert_same_ranking([(d.index, d.score) for d in result.data], expected)
    assert all(0.0 < d.score < 1.0 and d.object == "rank_result" for d in result.data)
    assert [d.input for d in result.data] == [DOCS[d.index] for d in result.data]
    tokens = _real_tokens(v2_reranker.encode_pairs([QUERY] * len(DOCS), DOCS))
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens

    top2 = mxb.rerank(query=QUERY, input=DOCS, top_k=2)
    assert [d.index for d in top2.data] == [r.index for r in expected[:2]]
    assert all(d.input is None for d in top2.data) and top2.top_k == 2 and top2.return_input is False


def test_mixedbread_sdk_objects_rank_fields_and_instruction(server: ServerProcess, v2_reranker: Any) -> None:
    mxb = mixedbread.Mixedbread(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    fields = ["title", "meta.body"]
    result = mxb.rerank(query=QUERY, input=OBJECTS, rank_fields=fields, return_input=True)
    assert_same_ranking(
        [(d.index, d.score) for d in result.data], _expected(v2_reranker, QUERY, OBJECTS, rank_fields=fields)
    )
    assert [d.input for d in result.data] == [OBJECTS[d.index] for d in result.data]

    flattened = mxb.rerank(query=QUERY, input=OBJECTS)
    assert_same_ranking([(d.index, d.score) for d in flattened.data], _expected(v2_reranker, QUERY, OBJECTS))

    instruction = "Find the author of the book."
    instructed = mxb.rerank(query=QUERY, input=DOCS, extra_body={"instruction": instruction})
    expected = _expected(v2_reranker, QUERY, DOCS, instruction=instruction)
    assert_same_ranking([(d.index, d.score) for d in instructed.data], expected)
    plain = {r.index: r.score for r in _expected(v2_reranker, QUERY, DOCS)}
    assert any(abs(r.score - plain[r.index]) > 1e-6 for r in expected)  # the instruction changes scores


def test_cohere_sdk_matches_the_library(server: ServerProcess, v2_reranker: Any) -> None:
    co = cohere.ClientV2(api_key=API_KEY, base_url=server.base_url)
    result = co.rerank(model=ALIASES[1], query=QUERY, documents=DOCS, top_n=3)
    expected = _expected(v2_reranker, QUERY, DOCS, top_k=3)
    assert result.id
    assert_same_ranking([(r.index, r.relevance_score) for r in result.results], expected)
    assert result.meta.tokens.input_tokens == _real_tokens(v2_reranker.encode_pairs([QUERY] * len(DOCS), DOCS))


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank"])
def test_cohere_shape_with_text_objects(client: httpx.Client, v2_reranker: Any, path: str) -> None:
    body = {"query": QUERY, "documents": [{"text": d} for d in DOCS], "return_documents": True, "top_n": 4}
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["id"] == response.headers["x-request-id"] and data["usage"]["total_tokens"] > 0
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in data["results"]], _expected(v2_reranker, QUERY, DOCS, top_k=4)
    )
    assert [r["document"] for r in data["results"]] == [{"text": DOCS[r["index"]]} for r in data["results"]]


def test_cohere_max_tokens_per_doc_scores_the_document_head(client: httpx.Client, v2_reranker: Any) -> None:
    docs = [DOCS[0] + " It is set in Alabama during the Great Depression.", DOCS[2], DOCS[3]]
    keep = 7
    heads = [
        v2_reranker.tokenizer.decode(v2_reranker.tokenizer(d, add_special_tokens=False)["input_ids"][:keep])
        for d in docs
    ]
    assert all(h != d for h, d in zip(heads, docs, strict=True))
    response = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, "max_tokens_per_doc": keep})
    assert response.status_code == 200, response.text
    data = response.json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in data["results"]], _expected(v2_reranker, QUERY, heads)
    )
    assert data["usage"]["prompt_tokens"] == _real_tokens(v2_reranker.encode_pairs([QUERY] * 3, heads))


def test_tei_shape(client: httpx.Client, v2_reranker: Any) -> None:
    response = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert response.status_code == 200, response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == len(DOCS)
    assert_same_ranking([(r["index"], r["score"]) for r in results], _expected(v2_reranker, QUERY, DOCS))
    assert [r["text"] for r in results] == [DOCS[r["index"]] for r in results]

    raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert_same_ranking([(r["index"], r["score"]) for r in raw], _expected(v2_reranker, QUERY, DOCS, normalize=False))
    assert all("text" not in r for r in raw)
    strict = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False})
    assert strict.status_code == 200


ERROR_CASES = [
    # (path, body, status, text in the message, param)
    ("/v1/reranking", b'{"query": "q", "input": [', 400, "JSON", None),
    ("/v1/reranking", [1, 2], 422, "body", "body"),
    ("/v1/reranking", {"input": ["a"]}, 422, "query", "query"),
    ("/v1/reranking", {"query": 5, "input": ["a"]}, 422, "query", "query"),
    ("/v1/reranking", {"query": "q", "input": []}, 422, "input", "input"),
    ("/v1/reranking", {"query": "q", "input": "a"}, 422, "input", "input"),
    ("/v1/reranking", {"query": "q", "input": ["a", 3]}, 422, "input[1]", "input[1]"),
    ("/v1/reranking", {"query": "q", "input": ["a"], "top_k": -1}, 422, "top_k", "top_k"),
    ("/v1/reranking", {"query": "q", "input": ["a"], "top_k": "3"}, 422, "top_k", "top_k"),
    ("/v1/reranking", {"query": "q", "input": ["a"], "return_input": "yes"}, 422, "return_input", "return_input"),
    ("/v1/reranking", {"query": "q", "input": [{"a": 1}], "rank_fields": ["b"]}, 422, "'b'", "rank_fields"),
    ("/v1/reranking", {"query": "q", "input": [{"a": ["x"]}], "rank_fields": ["a.²"]}, 422, "'a.²'", "rank_fields"),
    ("/v1/reranking", {"query": "q", "input": ["a"], "rank_fields": []}, 422, "rank_fields", "rank_fields"),
    ("/v1/reranking", {"query": "q", "input": ["a"], "rewrite_query": True}, 422, "rewrite_query", "rewrite_query"),
    ("/v1/reranking", {"query": "q", "input": ["a"] * (MAX_DOCS + 1)}, 413, f"at most {MAX_DOCS}", "input"),
    ("/v1/reranking", {"model": "other-model", "query": "q", "input": ["a"]}, 404, ALIASES[0], "model"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n", "top_n"),
    ("/v2/rerank", {"query": "q", "documents": ["a", {"title": "x"}]}, 422, "'text'", "documents[1]"),
    (
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0},
        422,
        "max_tokens_per_doc",
        "max_tokens_per_doc",
    ),
    ("/v2/rerank", {"query": "q", "documents": ["a"] * (MAX_DOCS + 1)}, 413, "documents", "documents"),
    ("/v1/rerank", {"model": "nope", "query": "q", "documents": ["a"]}, 404, ALIASES[1], "model"),
    ("/rerank", {"query": "q", "texts": [{"text": "a"}]}, 422, "texts[0]", "texts[0]"),
    (
        "/rerank",
        {"query": "q", "texts": ["a"], "truncation_direction": "Up"},
        422,
        "truncation_direction",
        "truncation_direction",
    ),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": 1}, 422, "raw_scores", "raw_scores"),
    ("/rerank", {"query": "q", "texts": ["a"] * (MAX_DOCS + 1)}, 413, "texts", "texts"),
    # Numbers outside strict JSON: refused while parsing, even where they would only be echoed.
    ("/v1/reranking", b'{"query":"q","input":[{"text":"a","x":NaN}],"return_input":true}', 400, "NaN", "input[0].x"),
    (
        "/v2/rerank",
        b'{"query":"q","documents":[{"text":"a","n":Infinity}],"return_documents":true}',
        400,
        "Infinity",
        "documents[0].n",
    ),
    ("/v2/rerank", b'{"query":"q","documents":[{"text":"a","n":-Infinity}]}', 400, "-Infinity", "documents[0].n"),
    ("/v1/rerank", b'{"query":"q","documents":[{"text":"a","n":[1, 1e400]}]}', 400, "1e400", "documents[0].n[1]"),
    ("/rerank", b'{"query":"q","texts":["a"],"raw_scores":false,"top":-1e999}', 400, "1e999", "top"),
    ("/v1/reranking", b'{"query":"q","input":[{"big":' + b"9" * 5000 + b"}]}", 400, "5000 characters", "input[0].big"),
    (
        "/v1/reranking",
        b'{"query":"q","input":[{"big":' + b"9" * 400 + b"}]}",
        400,
        "not a valid JSON number",
        "input[0].big",
    ),
    # Text that is not Unicode: named, never the tokenizer's own message.
    ("/v1/reranking", b'{"query":"\\ud800","input":["a"]}', 400, "lone surrogate", "query"),
    ("/v1/reranking", b'{"query":"q","input":["a","b\\udfffc"]}', 400, "lone surrogate", "input[1]"),
    ("/v2/rerank", b'{"query":"q","documents":[{"text":"x\\ud83d"}]}', 400, "U+D83D", "documents[0].text"),
    ("/rerank", b'{"query":"q","texts":["ok"],"instruction":"\\udc00"}', 400, "surrogate", "instruction"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle", "param"), ERROR_CASES)
def test_bad_requests_get_4xx_naming_the_field(
    client: httpx.Client, path: str, body: Any, status: int, needle: str, param: str | None
) -> None:
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"message", "error", "error_type", "param"}, payload
    assert needle in payload["message"], payload
    assert payload["param"] == param, payload
    assert payload["error"] == payload["message"]
    assert payload["error_type"] == ("model_not_found" if status == 404 else "validation")
    assert "Traceback" not in payload["message"] and "invalid literal" not in payload["message"]


async def _post_all(base_url: str, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120, limits=limits) as ac:
        return list(await asyncio.gather(*(ac.post(path, json=body) for path, body in requests)))


def _pairs(path: str, data: Any) -> list[tuple[int, float]]:
    if path == "/v1/reranking":
        return [(d["index"], d["score"]) for d in data["data"]]
    if path == "/rerank":
        return [(d["index"], d["score"]) for d in data]
    return [(d["index"], d["relevance_score"]) for d in data["results"]]


def _workload(n: int) -> list[tuple[str, str, list[str]]]:
    """``n`` (path, query, documents): 12 distinct payloads spread over the three API shapes."""
    queries = [QUERY, "Which whale did Melville write about?", "Who are famous English novelists?"]
    paths = ["/v1/reranking", "/v2/rerank", "/rerank", "/v1/rerank"]
    out = []
    for i in range(n):
        k = i % 12
        docs = [DOCS[(k + j) % len(DOCS)] + f" (copy {k})" for j in range(2 + k % 4)]
        out.append((paths[k % 4], queries[k % 3], docs))
    return out


def _body(path: str, query: str, docs: list[str]) -> dict[str, Any]:
    if path == "/v1/reranking":
        return {"query": query, "input": docs}
    if path == "/rerank":
        return {"query": query, "texts": docs}
    return {"query": query, "documents": docs}


def test_concurrent_requests_match_sequential_library_calls_and_share_batches(
    server: ServerProcess, client: httpx.Client, v2_reranker: Any
) -> None:
    workload = _workload(60)
    before = client.get("/metrics").text
    responses = asyncio.run(_post_all(server.base_url, [(p, _body(p, q, d)) for p, q, d in workload]))
    after = client.get("/metrics").text
    expected = {}
    for (path, query, docs), response in zip(workload, responses, strict=True):
        assert response.status_code == 200, response.text
        key = (query, tuple(docs))
        if key not in expected:
            expected[key] = _expected(v2_reranker, query, docs)
        assert_same_ranking(_pairs(path, response.json()), expected[key])
    batches = metric(after, "mxbai_rerank_batches_total", outcome="ok") - metric(
        before, "mxbai_rerank_batches_total", outcome="ok"
    )
    documents = metric(after, "mxbai_rerank_documents_total") - metric(before, "mxbai_rerank_documents_total")
    assert documents == sum(len(d) for _, _, d in workload)
    # Dynamic batching: 60 concurrent requests were served by fewer scoring calls.
    assert 1 <= batches < len(workload)


def test_a_failing_request_fails_alone_and_the_server_keeps_serving(
    server: ServerProcess, client: httpx.Client, v2_reranker: Any
) -> None:
    workload = _workload(12)
    requests = [(p, _body(p, q, d)) for p, q, d in workload]
    poisoned = [("/v1/reranking", {"query": QUERY, "input": [DOCS[0], f"a {POISON} b"]})] * 2
    responses = asyncio.run(_post_all(server.base_url, [*requests[:6], *poisoned, *requests[6:]]))
    bad = responses[6:8]
    good = responses[:6] + responses[8:]
    log = server.log()
    for response in bad:
        assert response.status_code == 500
        # The client gets a request id, not the exception; the server log has both.
        request_id = response.headers["x-request-id"]
        assert request_id in response.json()["message"]
        assert "non-finite" not in response.text and "NonFinite" not in response.text
        assert response.json()["error_type"] == "backend" and response.json()["param"] is None
        # One log record: the line naming the id, then the traceback of the model's error.
        record = re.escape(request_id) + _TRACEBACK + r"\S*NonFiniteScoreError: "
        assert re.search(record, log), log
    assert len({r.headers["x-request-id"] for r in responses}) == len(responses)
    for (path, query, docs), response in zip(workload, good, strict=True):
        assert response.status_code == 200, response.text
        assert_same_ranking(_pairs(path, response.json()), _expected(v2_reranker, query, docs))
    assert (
        metric(
            client.get("/metrics").text, "mxbai_rerank_request_failures_total", endpoint="/v1/reranking", kind="backend"
        )
        >= 2
    )
    assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_health_and_results_after_abuse(server: ServerProcess, client: httpx.Client, v2_reranker: Any) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    # A client that promises a body and disconnects halfway.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/reranking HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_KEY.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"query": "q", "inp'
        )
    # Garbage that is not HTTP at all.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x00\x01\x02 not http\r\n\r\n")
    assert client.get("/does-not-exist").status_code == 404
    assert client.post("/rerank", content=b"\xff\xfe", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/rerank", json={"query": "q", "texts": ["lorem " * 2000]}).status_code == 200
    assert httpx.post(f"{server.base_url}/rerank", json={"query": "q", "texts": ["a"]}).status_code == 401
    assert client.post("/rerank", json={"query": "q", "texts": []}).status_code == 422
    assert client.post("/rerank", json={"query": "q", "texts": ["a"] * (MAX_DOCS + 1)}).status_code == 413
    assert client.post("/rerank", json={"model": "nope", "query": "q", "texts": ["a"]}).status_code == 404
    # A sane client-supplied request id is used (echoed, in the 500 message and in the log); an
    # unusable one is replaced by the server's own.
    for i, sent in enumerate(("client-trace-0001", "x" * 200, "has space")):
        response = client.post("/rerank", json={"query": POISON, "texts": ["a"]}, headers={"X-Request-ID": sent})
        assert response.status_code == 500
        used = response.headers["x-request-id"]
        assert (used == sent) == (i == 0) and used in response.json()["message"] and used in server.log()

    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    response = client.post("/v1/reranking", json={"query": QUERY, "input": DOCS})
    assert response.status_code == 200
    assert_same_ranking(_pairs("/v1/reranking", response.json()), _expected(v2_reranker, QUERY, DOCS))
    text = client.get("/metrics").text
    for kind in ("auth", "validation", "model_not_found", "backend"):
        assert metric(text, "mxbai_rerank_request_failures_total", endpoint="/rerank", kind=kind) >= 1, kind
    for name in ("mxbai_rerank_queue_depth", "mxbai_rerank_batch_requests_count", "mxbai_rerank_tokens_total"):
        assert name in text
    assert metric(text, "mxbai_rerank_request_duration_seconds_count", endpoint="/v1/reranking") > 0


def test_a_json_body_is_json_whatever_its_content_type(client: httpx.Client, v2_reranker: Any) -> None:
    """``curl -d`` sends ``application/x-www-form-urlencoded``; other clients send text/plain or nothing."""
    body = json.dumps({"query": QUERY, "input": DOCS}).encode()
    expected = _expected(v2_reranker, QUERY, DOCS)
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "application/octet-stream", None):
        headers = {"content-type": content_type} if content_type else {}
        request = client.build_request("POST", "/v1/reranking", content=body, headers=headers)
        if content_type is None:
            request.headers.pop("content-type", None)
        response = client.send(request)
        assert response.status_code == 200, (content_type, response.text)
        assert_same_ranking(_pairs("/v1/reranking", response.json()), expected)


def test_every_error_has_the_documented_shape(server: ServerProcess, client: httpx.Client) -> None:
    """Errors of the router, the JSON parser and the HTTP protocol layer, not only of the endpoints."""
    nested = b'{"query":"q","input":[' + b"[" * 300 + b"]" * 300 + b"]}"
    deeper = b'{"query":"q","input":[' + b"[" * 5000 + b"]" * 5000 + b"]}"
    cases: list[tuple[httpx.Response, int, str, str | None]] = [
        (
            client.post("/rerank", content=b"\xff\xfe{}", headers={"content-type": "application/json"}),
            400,
            "validation",
            None,
        ),
        (client.post("/v1/reranking", content=nested), 400, "validation", "input[0]" + "[0]" * 126),
        (client.post("/v1/reranking", content=deeper), 400, "validation", None),
        (
            client.post("/v1/reranking", content=b'{"query":"q","input":["a"],"top_k":' + b"7" * 5000 + b"}"),
            400,
            "validation",
            "top_k",
        ),
        (client.get("/no/such/path"), 404, "not_found", None),
        (client.post("/v3/rerank", json={}), 404, "not_found", None),
        (client.get("/v1/reranking"), 405, "method_not_allowed", None),
        (client.delete("/rerank"), 405, "method_not_allowed", None),
        (client.post("/v1/models"), 405, "method_not_allowed", None),
        (httpx.post(f"{server.base_url}/rerank", json={"query": "q", "texts": ["a"]}), 401, "auth", None),
    ]
    for response, status, error_type, param in cases:
        assert response.status_code == status, (response.request.url, response.text)
        payload = response.json()
        assert set(payload) == {"message", "error", "error_type", "param"}, payload
        assert payload["error_type"] == error_type and payload["param"] == param, payload
        assert payload["message"] == payload["error"] and payload["message"]
        assert response.headers["x-request-id"]
    assert "allowed: POST" in client.get("/v1/reranking").json()["message"]

    async def raw(data: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(read_response(reader), 30)
        finally:
            writer.close()

    # Malformed HTTP is answered by the protocol layer, in the same shape.
    for data in (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"\x00\x01\x02 not http\r\n\r\n"):
        status, headers, body = asyncio.run(raw(data))
        assert status == 400 and headers["content-type"] == "application/json", body
        payload = json.loads(body)
        assert set(payload) == {"message", "error", "error_type", "param"} and payload["error_type"] == "validation"


def test_default_limits_payload_2mb_and_text_200k_characters(server: ServerProcess, client: httpx.Client) -> None:
    async def promise(length: int) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        writer.write(request_head("/rerank", length=length, headers={"Authorization": f"Bearer {API_KEY}"}))
        await writer.drain()
        try:
            status, _, body = await asyncio.wait_for(read_response(reader), 30)
        finally:
            writer.close()
        return status, body

    status, body = asyncio.run(promise(2_000_001))  # the body never comes: refused from its length
    assert status == 413 and json.loads(body)["error_type"] == "validation"
    assert "2000000" in json.loads(body)["message"]
    over = client.post("/rerank", json={"query": "q", "texts": ["a" * 200_001]})
    assert over.status_code == 413 and over.json()["param"] == "texts[0]"
    assert client.post("/rerank", json={"query": "q", "texts": ["a" * 200_000]}).status_code == 200


def _readme_serving_section() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("## Serving over HTTP")
    return readme[start : readme.index("\n## ", start + 1)]


def test_readme_serving_examples_run_as_written(server: ServerProcess, v2_reranker: Any) -> None:
    """Every curl line and Python example of the README's serving section, against this server.

    The examples address ``localhost:8000`` / ``127.0.0.1:8000``: curl is pointed at this
    server's port with ``--connect-to`` (the command line itself is unchanged), Python gets the
    port substituted. The model loading line (``mxbai-rerank serve ...``) is the fixture itself.
    """
    section = _readme_serving_section()
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)
    _, port = host_port(server.base_url)
    shell_lines = [
        line
        for lang, code in blocks
        if lang == "bash"
        for line in code.splitlines()
        if line.strip().startswith(("curl ", "H="))
    ]
    curls = [line for line in shell_lines if line.startswith("curl ")]
    assert len(curls) >= 4, section
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # loopback, never a proxy
    wrapper = (
        "curl() { command curl --silent --show-error --fail-with-body --max-time 60 --noproxy '*' "
        f"--connect-to localhost:8000:127.0.0.1:{port} --connect-to 127.0.0.1:8000:127.0.0.1:{port} "
        '--write-out "\\n%{http_code}\\n" "$@"; }\n'
    )
    variables = "\n".join(line for line in shell_lines if line.startswith("H="))
    for line in curls:
        done = subprocess.run(
            ["bash", "-c", f"{wrapper}{variables}\n{line}"], capture_output=True, text=True, env=env, timeout=90
        )
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        payload, status = done.stdout.rstrip("\n").rsplit("\n", 1)
        assert status == "200", (line, payload)
        data = json.loads(payload)
        assert data, line
    python = [code for lang, code in blocks if lang == "python"]
    assert python, section
    for code in python:
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("localhost:8000", f"127.0.0.1:{port}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, (code, done.stderr)


def test_compiled_packed_server_scores_as_the_library(v2_model_dir: Path, v2_reranker: Any) -> None:
    """serve --backend packed --compile: compiled at startup (health answers only after), same scores."""
    proc = start_server(v2_model_dir, "--backend", "packed", "--compile", "--log-level", "info")
    try:
        with httpx.Client(base_url=proc.base_url, timeout=60) as c:
            for docs in (DOCS, [d + " " + d for d in DOCS[:3]]):  # two new shapes after the warm-up
                response = c.post("/rerank", json={"query": QUERY, "texts": docs, "raw_scores": True})
                assert response.status_code == 200, response.text
                assert_same_ranking(
                    [(r["index"], r["score"]) for r in response.json()],
                    _expected(v2_reranker, QUERY, docs, normalize=False),
                )
    finally:
        proc.stop()
    assert "decoder layers compiled" in proc.log()
