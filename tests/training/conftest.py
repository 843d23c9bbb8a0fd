"""Fixtures of the training tests: a v2 starting model that answers "1"/"0", synthetic data sets.

The published v2 models answer with "1" or "0" at the end of their prompt (the two tokens hold
almost all of the next-token probability); the random tiny fixture does not (about 1e-5), so
GRPO, which samples answers from the full vocabulary, could never draw a reward from it. The
starting model of these tests is the tiny fixture with its LM-head rows of "1" and "0" both
moved by the same vector along the mean last hidden state (the embeddings untied first): the
two answer logits rise together, the answers hold nearly all of the mass, and the score
``logit("1") - logit("0")`` (the direction ``W["1"] - W["0"]``) is exactly the fixture's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_groups, write_jsonl

ANSWER_LOGIT_BOOST = 14.0  # mean rise of the two answer logits: they get ~95% of the mass


def build_answer_ready(source: Path, target: Path) -> Path:
    from mxbai_rerank import MxbaiRerankV2
    from mxbai_rerank._batching import collate
    from mxbai_rerank._heads import last_token_pool

    reranker = MxbaiRerankV2(str(source), device="cpu", torch_dtype=torch.float32)
    records = make_groups(8, 3, seed=99)
    queries = [r["query"] for r in records for _ in range(4)]
    documents = [d for r in records for d in [r["positive"], *r["negatives"]]]
    encoded = reranker.encode_pairs(queries, documents)
    head = reranker.engine.head
    batch = collate(encoded.input_ids, reranker.engine.pad_token_id)
    with torch.no_grad():
        hidden = last_token_pool(head.backbone(input_ids=batch.input_ids).last_hidden_state, batch)  # (N, H)
        u = hidden.mean(dim=0)  # (H,)
        step = ANSWER_LOGIT_BOOST / float((hidden @ u).mean())
        model = reranker.engine.model
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        for token in (reranker.yes_loc, reranker.no_loc):
            model.lm_head.weight[token] += step * u
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    reranker.tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def v2_start_dir(v2_model_dir: Path) -> Path:
    target = v2_model_dir.with_name("tiny-qwen2-reranker-answers")
    return target if (target / "config.json").is_file() else build_answer_ready(v2_model_dir, target)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {
        "train": write_jsonl(make_groups(120, 7, seed=1), root / "train.jsonl"),
        "eval": write_jsonl(make_groups(30, 9, seed=2), root / "eval.jsonl"),
    }
