"""End-to-end fine-tuning of the tiny fixtures on the synthetic keyword task (``synthetic.py``).

Held-out data: 30 new queries with one relevant and nine non-relevant documents each, reranked
by the model. The untrained model ranks them about at random (nDCG@10 ~0.5); every stage alone,
and the three stages together, must raise nDCG@10 by at least :data:`MARGIN` (they reach ~0.9).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_groups

from mxbai_rerank import ModelLoadError, MxbaiRerankV1, MxbaiRerankV2, load
from mxbai_rerank.training import (
    STAGES,
    DatasetError,
    TrainingConfig,
    TrainingConfigError,
    TrainingResult,
    format_metrics_table,
    load_training_data,
    train,
)

MARGIN = 0.25  # nDCG@10 a trained model must gain over the untrained one on the held-out set
STEPS = 40  # optimizer steps per stage


def config(**overrides) -> TrainingConfig:
    base = {
        "device": "cpu", "lora_rank": 8, "lora_alpha": 16, "learning_rate": 3e-3, "batch_size": 32, "mine": "none",
        "max_steps": STEPS,
    }  # fmt: skip
    return TrainingConfig(**{**base, **overrides})


def held_out_pairs(n: int = 6) -> tuple[list[str], list[str]]:
    records = make_groups(n, 3, seed=11)
    return [r["query"] for r in records for _ in range(4)], [
        d for r in records for d in [r["positive"], *r["negatives"]]
    ]


def ndcg(result: TrainingResult, name: str) -> float:
    return result.metrics["eval"]["metrics"][name]["ndcg@10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Training runs shared by the tests of this module, each made on first use."""
    cache: dict[str, TrainingResult] = {}
    root = tmp_path_factory.mktemp("runs")

    def get(name: str, model: Path, data: Path, cfg: TrainingConfig, **kwargs) -> TrainingResult:
        if name not in cache:
            cache[name] = train(str(model), data, root / name, cfg, **kwargs)
        return cache[name]

    return get


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_alone_learns(stage: str, runs, v2_start_dir: Path, synthetic_data: dict[str, Path]) -> None:
    result = runs(
        stage, v2_start_dir, synthetic_data["train"], config(stages=(stage,)), eval_data=synthetic_data["eval"]
    )
    before, after = ndcg(result, "before"), ndcg(result, f"after_{stage}")
    print(f"\n{stage}:\n{format_metrics_table(result.metrics['eval']['metrics'])}")  # shown with -s
    assert after >= before + MARGIN, format_metrics_table(result.metrics["eval"]["metrics"])
    # The loss falls (GRPO's objective hovers near 0 by construction: its mean reward rises instead).
    curve = result.metrics["train_loss"]["grpo_reward" if stage == "grpo" else stage]
    assert len(result.metrics["train_loss"][stage]) == STEPS
    first, last = np.mean(curve[:10]), np.mean(curve[-10:])
    assert (last > first + 0.2) if stage == "grpo" else (last < 0.7 * first), curve
    on_disk = json.loads((result.output_dir / "metrics.json").read_text())
    assert on_disk["eval"]["metrics"] == result.metrics["eval"]["metrics"]
    assert not result.output_dir.with_name(result.output_dir.name + ".checkpoints").exists()


@pytest.fixture(scope="module")
def three_stages(runs, v2_start_dir: Path, synthetic_data: dict[str, Path]) -> TrainingResult:
    cfg = config(stages=("grpo", "contrastive", "preference"), max_steps=30, save_adapter=True)
    return runs("three", v2_start_dir, synthetic_data["train"], cfg, eval_data=synthetic_data["eval"])


def test_the_three_stages_together_learn(three_stages: TrainingResult) -> None:
    evals = three_stages.metrics["eval"]["metrics"]
    print(f"\nthree stages:\n{format_metrics_table(evals)}")  # shown with -s
    assert list(evals) == ["before", "after_grpo", "after_contrastive", "after_preference"]
    assert evals["after_preference"]["ndcg@10"] >= evals["before"]["ndcg@10"] + MARGIN, format_metrics_table(evals)
    assert evals["after_grpo"]["ndcg@10"] > evals["before"]["ndcg@10"]
    table = format_metrics_table(evals)
    assert "after preference" in table and "nDCG@10" in table and "MRR@10" in table


def test_the_saved_model_reloads_with_the_same_scores(three_stages: TrainingResult) -> None:
    loaded = load(str(three_stages.output_dir), device="cpu", torch_dtype=torch.float32)
    assert isinstance(loaded, MxbaiRerankV2) and loaded.family == "mxbai-v2"
    queries, documents = held_out_pairs()
    in_memory = three_stages.reranker.score_pairs(queries, documents)
    np.testing.assert_allclose(loaded.score_pairs(queries, documents), in_memory, atol=1e-5)
    # The marker's estimated_max drives normalize=True: sigmoid(raw - estimated_max / 2).
    marker = json.loads((three_stages.output_dir / "config.json").read_text())["mxbai_rerank"]
    assert marker == {"family": "mxbai-v2", "estimated_max": three_stages.estimated_max}
    assert loaded.estimated_max == three_stages.estimated_max
    normalized = loaded.score_pairs(queries, documents, normalize=True)
    np.testing.assert_allclose(normalized, 1 / (1 + np.exp(-(in_memory - marker["estimated_max"] / 2))), atol=1e-5)


def test_estimated_max_is_the_95th_percentile_of_training_positives(
    three_stages: TrainingResult, synthetic_data: dict[str, Path]
) -> None:
    data = load_training_data(synthetic_data["train"])
    pairs = [(g.query, g.documents[i]) for g in data.groups for i in g.positives]
    scores = three_stages.reranker.score_pairs([q for q, _ in pairs], [d for _, d in pairs])
    assert three_stages.estimated_max == pytest.approx(np.percentile(scores, 95), abs=1e-3)
    negatives = [(g.query, g.documents[i]) for g in data.groups for i in g.negatives]
    below = three_stages.reranker.score_pairs([q for q, _ in negatives], [d for _, d in negatives])
    # normalize=True: the top positives land above 0.5 and the typical negative below it.
    assert three_stages.estimated_max > 0 and np.median(below) < three_stages.estimated_max / 2


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # asked by peft
def test_merged_lora_equals_the_adapter_on_the_base_model(three_stages: TrainingResult, v2_start_dir: Path) -> None:
    from peft import PeftModel

    assert three_stages.metrics["export"]["merge_max_abs_diff"] < 1e-4
    base = MxbaiRerankV2(str(v2_start_dir), device="cpu", torch_dtype=torch.float32)
    queries, documents = held_out_pairs()
    untrained = base.score_pairs(queries, documents)
    PeftModel.from_pretrained(base.engine.model, str(three_stages.output_dir / "adapter"))  # injects in place
    with_adapter = base.score_pairs(queries, documents)
    merged = three_stages.reranker.score_pairs(queries, documents)
    np.testing.assert_allclose(with_adapter, merged, atol=1e-4)
    assert np.abs(with_adapter - untrained).max() > 0.5  # the adapter is not a no-op


def test_a_resumed_run_ends_where_an_uninterrupted_one_ends(
    v2_start_dir: Path, synthetic_data: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config(stages=("pointwise", "preference"), max_steps=6, checkpoint_every=2)
    whole = train(str(v2_start_dir), synthetic_data["train"], tmp_path / "whole", cfg)

    # An interrupted run never touches a good model already at the output path.
    output = tmp_path / "resumed"
    shutil.copytree(v2_start_dir, output)
    before = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}

    def interrupt(info) -> None:
        if info.stage == "preference" and info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(str(v2_start_dir), synthetic_data["train"], output, cfg, on_step=interrupt)
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".resumed.tmp-*"))
    checkpoints = sorted(p.name for p in (tmp_path / "resumed.checkpoints" / "checkpoints").iterdir())
    assert checkpoints == ["stage1-step0000002"]

    # Resuming with other options is refused rather than mixing two runs.
    with pytest.raises(TrainingConfigError, match=r"other options \(seed\)"):
        train(str(v2_start_dir), synthetic_data["train"], output, config(**{**cfg.to_dict(), "seed": 1}), resume=True)
    resumed = train(str(v2_start_dir), synthetic_data["train"], output, cfg, resume=True)
    assert resumed.metrics["train_loss"].keys() == whole.metrics["train_loss"].keys()
    for stage, losses in whole.metrics["train_loss"].items():
        np.testing.assert_allclose(resumed.metrics["train_loss"][stage], losses, atol=1e-6)
    queries, documents = held_out_pairs()
    np.testing.assert_allclose(
        load(str(output), device="cpu", torch_dtype=torch.float32).score_pairs(queries, documents),
        whole.reranker.score_pairs(queries, documents),
        atol=1e-5,
    )


def test_full_fine_tuning_with_a_frozen_reference(v2_start_dir: Path, tmp_path: Path) -> None:
    from mxbai_rerank.training._trainer import Trainer

    data = load_training_data(make_groups(8, 3, seed=12))
    reranker = MxbaiRerankV2(str(v2_start_dir), device="cpu", torch_dtype=torch.float32)
    start = {n: p.detach().clone() for n, p in reranker.engine.model.named_parameters()}
    trainer = Trainer(
        reranker, data, config(stages=("grpo", "pointwise"), lora=False, max_steps=2, learning_rate=1e-3),
        work_dir=tmp_path / "work",
    )  # fmt: skip
    record = trainer.fit()
    assert trainer.peft_model is None and trainer.ref_head is not None
    assert all(np.isfinite(record["train_loss"][s]).all() for s in ("grpo", "pointwise"))
    frozen = dict(trainer.ref_head.backbone.named_parameters())
    trained = dict(reranker.engine.model.model.named_parameters())
    assert all(torch.equal(p, start[f"model.{n}"]) for n, p in frozen.items())  # the reference never moves
    assert any(not torch.equal(p, start[f"model.{n}"]) for n, p in trained.items())


def test_v1_cross_encoder_trains_pointwise_and_contrastive(
    v1_model_dir: Path, synthetic_data: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config(stages=("pointwise", "contrastive"), max_steps=20)
    result = train(str(v1_model_dir), synthetic_data["train"], tmp_path / "v1", cfg, eval_data=synthetic_data["eval"])
    loaded = load(str(result.output_dir), device="cpu", torch_dtype=torch.float32)
    assert isinstance(loaded, MxbaiRerankV1)
    assert json.loads((result.output_dir / "config.json").read_text())["mxbai_rerank"] == {"family": "mxbai-v1"}
    queries, documents = held_out_pairs()
    np.testing.assert_allclose(
        loaded.score_pairs(queries, documents), result.reranker.score_pairs(queries, documents), atol=1e-5
    )
    evals = result.metrics["eval"]["metrics"]
    assert evals["after_contrastive"]["ndcg@10"] > evals["before"]["ndcg@10"], format_metrics_table(evals)
    with pytest.raises(TrainingConfigError, match="pointwise and contrastive stages only, not grpo"):
        train(str(v1_model_dir), synthetic_data["train"], tmp_path / "v1-grpo", config(stages=("grpo",)))
    assert not (tmp_path / "v1-grpo").exists() and not (tmp_path / "v1-grpo.checkpoints").exists()


def test_bad_input_fails_before_any_weight_is_touched(
    v2_start_dir: Path, v2_model_dir: Path, synthetic_data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def nothing_written() -> bool:
        return not out.exists() and not out.with_name("out.checkpoints").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": oops}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{bad}:2: not a valid JSON line"):
        train(str(v2_start_dir), bad, out, config())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no training examples"):
        train(str(v2_start_dir), empty, out, config())
    with pytest.raises(TrainingConfigError, match=r"unknown stage.*'dance'"):
        config(stages=("grpo", "dance"))
    plain = tmp_path / "plain-qwen"  # a causal LM without the marker or a known name: not a reranker
    shutil.copytree(v2_model_dir, plain)
    cfg_json = json.loads((plain / "config.json").read_text())
    del cfg_json["mxbai_rerank"]
    (plain / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ModelLoadError, match="cannot tell which reranker family"):
        train(str(plain), synthetic_data["train"], out, config())
    assert nothing_written()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainingConfigError, match="non-empty folder without a model"):
        train(str(v2_start_dir), synthetic_data["train"], out, config())
    assert (out / "notes.txt").read_text() == "mine"
