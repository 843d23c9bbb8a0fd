"""Structured documents: rank_fields, dotted paths, the object-to-text rule, JSON tool schemas."""

from __future__ import annotations

import json

import pytest

from mxbai_rerank import MxbaiRerankV2
from mxbai_rerank._documents import document_text, object_text

ARTICLE = {"title": "Mockingbird", "meta": {"author": "Harper Lee", "year": 1960}, "tags": ["novel", "classic"]}


def test_single_rank_field_is_exactly_the_value() -> None:
    assert document_text(ARTICLE, ["title"]) == "Mockingbird"
    assert document_text(ARTICLE, ["meta.author"]) == "Harper Lee"
    assert document_text(ARTICLE, ["meta.year"]) == "1960"
    assert document_text(ARTICLE, ["tags.1"]) == "classic"
    assert document_text({"a.b": "literal key", "a": {"b": "nested"}}, ["a.b"]) == "literal key"


def test_several_rank_fields_are_labelled_lines_in_the_given_order() -> None:
    assert document_text(ARTICLE, ["meta.author", "title"]) == "meta.author: Harper Lee\ntitle: Mockingbird"


def test_object_without_rank_fields_is_flattened_deterministically() -> None:
    text = object_text(ARTICLE)
    assert text == "title: Mockingbird\nmeta.author: Harper Lee\nmeta.year: 1960\ntags: novel, classic"
    assert object_text(json.loads(json.dumps(ARTICLE))) == text
    assert object_text({"list": [{"a": 1}], "empty": {}}) == 'list: [{"a": 1}]\nempty: {}'


def test_unknown_rank_field_names_the_path_and_document(v2_reranker: MxbaiRerankV2) -> None:
    with pytest.raises(ValueError, match=r"'body' not found in documents\[1\]"):
        v2_reranker.rank("q", [{"body": "x"}, {"title": "y"}], rank_fields=["body"])


def test_rank_returns_the_original_objects_and_scores_the_field(v2_reranker: MxbaiRerankV2) -> None:
    docs = [{"id": i, "body": text} for i, text in enumerate(["Harper Lee wrote it.", "Melville wrote Moby-Dick."])]
    results = v2_reranker.rank("Who wrote Mockingbird?", docs, rank_fields=["body"])
    assert {r.index: r.document for r in results} == dict(enumerate(docs))
    plain = v2_reranker.rank("Who wrote Mockingbird?", [d["body"] for d in docs])
    assert [r.index for r in results] == [r.index for r in plain]
    assert [r.score for r in results] == pytest.approx([r.score for r in plain], abs=1e-6)


TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the current weather and temperature for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "name": "send_email",
        "description": "Send an email message to a recipient with a subject and body.",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}}},
    },
    {
        "name": "search_flights",
        "description": "Search flights between two airports on a date.",
        "parameters": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money from one currency to another.",
        "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}},
    },
]


def test_ranking_json_tool_schemas(v2_reranker: MxbaiRerankV2) -> None:
    query = "What's the weather like in Berlin right now?"
    by_fields = v2_reranker.rank(
        query, TOOLS, rank_fields=["name", "description"], instruction="Pick the tool to call."
    )
    assert sorted(r.index for r in by_fields) == [0, 1, 2, 3]
    assert all(r.document is TOOLS[r.index] for r in by_fields)
    # The scored text is exactly what the documented rules give, so scores equal scoring that text.
    texts = [f"name: {t['name']}\ndescription: {t['description']}" for t in TOOLS]
    expected = v2_reranker.score_pairs([query] * 4, texts, instruction="Pick the tool to call.")
    assert [r.score for r in sorted(by_fields, key=lambda r: r.index)] == pytest.approx(expected.tolist(), abs=1e-5)
    whole = v2_reranker.rank(query, TOOLS, top_k=2)
    assert len(whole) == 2 and all(isinstance(r.document, dict) for r in whole)


def test_non_ascii_digits_are_not_list_indices() -> None:
    from mxbai_rerank._documents import document_text

    assert document_text({"a": ["x", "y"]}, ["a.1"]) == "y"
    with pytest.raises(ValueError, match=r"rank_fields path 'a\.²' not found"):
        document_text({"a": ["x", "y"]}, ["a.²"])
