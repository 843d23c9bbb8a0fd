"""Families as registered data, strict detection, the engine's seams, and upstream's model-level API."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mxbai_rerank import (
    ModelLoadError,
    MxbaiRerankV1,
    MxbaiRerankV2,
    Scorer,
    TransformerReranker,
    identify_family,
    load,
    register_family,
)
from mxbai_rerank._engine._loading import read_config
from mxbai_rerank._registry import FAMILIES, detect_family

QUERY = "Who wrote 'To Kill a Mockingbird'?"
DOCS = [
    "'To Kill a Mockingbird' is a novel by Harper Lee published in 1960.",
    "The novel 'Moby-Dick' was written by Herman Melville.",
    "Harper Lee, an American novelist, was born in Monroeville, Alabama.",
]


def _config_only(path: Path, config: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def _linked_copy(src: Path, dst: Path, edit_config=None) -> Path:
    """``src`` under another name: weights and tokenizer linked, config.json rewritten."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name != "config.json":
            (dst / item.name).symlink_to(item)
    config = json.loads((src / "config.json").read_text())
    if edit_config is not None:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _without_marker(config: dict) -> None:
    config.pop("mxbai_rerank", None)


# -- strict detection -----------------------------------------------------------------------
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000}  # fmt: skip
QWEN3 = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000}  # fmt: skip


@pytest.mark.parametrize("config", [LLAMA, QWEN3], ids=["llama", "qwen3"])
def test_other_causal_lms_are_refused_without_family(tmp_path: Path, config: dict) -> None:
    path = _config_only(tmp_path / "some-reranker", config)
    with pytest.raises(ModelLoadError, match=r"cannot tell which reranker family.*family='mxbai-v2'"):
        load(str(path))
    with pytest.raises(ModelLoadError, match="cannot tell which reranker family"):
        identify_family(str(path))  # the same answer from the config alone
    # Forcing the family passes detection (what a user asks for is what they get).
    family, spec = detect_family(str(path), read_config(str(path)), "mxbai-v2")
    assert family.name == "mxbai-v2" and spec is None


def test_two_label_classifier_is_refused_even_by_name(tmp_path: Path) -> None:
    config = {"model_type": "deberta-v2", "architectures": ["DebertaV2ForSequenceClassification"],
              "id2label": {"0": "no", "1": "yes"}}  # fmt: skip
    named = _config_only(tmp_path / "mxbai-rerank-base-v1", config)
    with pytest.raises(ModelLoadError, match="num_labels=2"):
        load(str(named))
    with pytest.raises(ModelLoadError, match="num_labels=2"):
        MxbaiRerankV1(str(named), device="cpu")


def test_a_qwen2_model_of_the_base_shape_is_not_taken_for_base_v2(tmp_path: Path, v2_model_dir: Path) -> None:
    renamed = _linked_copy(v2_model_dir, tmp_path / "my-qwen2", _without_marker)
    with pytest.raises(ModelLoadError, match="cannot tell which reranker family"):
        load(str(renamed))
    forced = load(str(renamed), family="mxbai-v2", device="cpu", torch_dtype="float32")
    assert isinstance(forced, MxbaiRerankV2)
    assert forced.estimated_max == 12.0  # not a known model: upstream's fallback, never base-v2's 9.0


def test_known_names_and_markers_identify_models(tmp_path: Path, v2_model_dir: Path, v1_model_dir: Path) -> None:
    by_name = _linked_copy(v2_model_dir, tmp_path / "mxbai-rerank-base-v2", _without_marker)
    reranker = load(str(by_name), device="cpu", torch_dtype="float32")
    assert isinstance(reranker, MxbaiRerankV2) and reranker.estimated_max == 9.0
    assert isinstance(load(str(v1_model_dir), device="cpu"), MxbaiRerankV1)  # the fixture's marker
    assert identify_family(str(v1_model_dir)).name == "mxbai-v1"

    def mark(config: dict) -> None:
        config["mxbai_rerank"] = {"family": "mxbai-v2", "estimated_max": 7.0}

    marked = _linked_copy(v2_model_dir, tmp_path / "marked", mark)
    assert load(str(marked), device="cpu").estimated_max == 7.0
    # A fine-tune saved under the published name keeps its own marker's value.
    assert load(str(_linked_copy(v2_model_dir, tmp_path / "x" / "mxbai-rerank-base-v2", mark))).estimated_max == 7.0

    def unknown(config: dict) -> None:
        config["mxbai_rerank"] = {"family": "mxbai-v9"}

    with pytest.raises(ModelLoadError, match="'mxbai-v9'"):
        load(str(_linked_copy(v2_model_dir, tmp_path / "v9", unknown)))


def test_only_the_published_names_are_known() -> None:
    from mxbai_rerank._registry import find_spec

    base, large = "mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"
    assert find_spec(base).name == base
    assert find_spec("/ckpts/mxbai-rerank-base-v2").name == base
    assert find_spec("/cache/models--mixedbread-ai--mxbai-rerank-large-v2/snapshots/abc").name == large
    for other in ("someone/mxbai-rerank-base-v2", "/ckpts/mxbai-rerank-base-v2/checkpoint-500",
                  "/cache/models--someone--mxbai-rerank-large-v2/snapshots/abc"):  # fmt: skip
        assert find_spec(other) is None, other


def test_forcing_the_wrong_family_names_the_problem(v1_model_dir: Path, v2_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"ForSequenceClassification"):
        load(str(v2_model_dir), family="mxbai-v1")
    with pytest.raises(ValueError, match="unknown reranker family 'nope'"):
        load(str(v2_model_dir), family="nope")


# -- a family of one's own ------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["mxbai_rerank._model:TransformerReranker", None])
def test_a_new_family_is_one_module_and_one_registry_entry(v2_model_dir: Path, cls: str | None) -> None:
    """A "yes"/"no" answer-token family (like other LLM rerankers) reuses the v2 machinery, whether
    load() returns the generic class or the v2 class the family was derived from."""
    from mxbai_rerank.families.mxbai_v2 import FAMILY as V2

    yes_no = dataclasses.replace(
        V2,
        name="test-yes-no",
        template=dataclasses.replace(V2.template, positive_token="yes", negative_token="no"),
        **({"reranker_class": cls} if cls else {}),
    )
    register_family(yes_no)
    try:
        reranker = load(str(v2_model_dir), family="test-yes-no", device="cpu", torch_dtype="float32")
        assert type(reranker) is (TransformerReranker if cls else MxbaiRerankV2)
        assert reranker.info().family == "test-yes-no"
        encoded = reranker.encode_pairs([QUERY], DOCS[:1])
        with torch.inference_mode():
            logits = reranker.model(input_ids=torch.tensor(encoded.input_ids)).logits[0, -1]
        tok = reranker.tokenizer
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        assert reranker.score_encoded(encoded)[0] == pytest.approx(float(logits[yes] - logits[no]), abs=1e-4)
    finally:
        FAMILIES.pop("test-yes-no")


# -- the Scorer protocol --------------------------------------------------------------------
def test_rerankers_are_scorers_with_info(v2_reranker: MxbaiRerankV2, v1_reranker: MxbaiRerankV1) -> None:
    for reranker, family in ((v2_reranker, "mxbai-v2"), (v1_reranker, "mxbai-v1")):
        assert isinstance(reranker, Scorer)
        info = reranker.info()
        assert (info.family, info.device, info.dtype, info.backend) == (family, "cpu", "float32", "torch")
        assert info.max_length == reranker.max_length and info.model_id == reranker.model_name_or_path
        raw = reranker.score_encoded(reranker.encode_pairs([QUERY] * 3, DOCS))
        np.testing.assert_allclose(reranker.postprocess(raw, normalize=True), reranker.score_pairs(
            [QUERY] * 3, DOCS, normalize=True), rtol=1e-6)  # fmt: skip


# -- upstream's model-level surface ---------------------------------------------------------
def test_upstream_model_level_api(v2_reranker: MxbaiRerankV2) -> None:
    from mxbai_rerank.mxbai_rerank_v2 import RerankerOutput, estimated_max_cfg

    assert estimated_max_cfg == {"mixedbread-ai/mxbai-rerank-base-v2": 9.0, "mixedbread-ai/mxbai-rerank-large-v2": 12.0}
    assert v2_reranker.cfg.architectures == ["Qwen2ForCausalLM"]
    assert MxbaiRerankV2.task_prompt.endswith("Relevance:") and MxbaiRerankV2.sep == "\n"
    assert set(MxbaiRerankV2.chat_template) == {"prefix", "suffix"}
    inputs = v2_reranker.prepare_inputs([QUERY] * 3, DOCS)
    assert inputs["input_ids"].shape[1] % 8 == 0
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padded, as upstream
    with torch.inference_mode():
        out = v2_reranker(**inputs)
    assert isinstance(out, RerankerOutput) and out.loss is None
    np.testing.assert_allclose(out.logits.numpy(), v2_reranker.score_pairs([QUERY] * 3, DOCS), atol=1e-4)
    assert out.predictions.tolist() == (out.logits > 0).long().tolist()
    ids = v2_reranker.concat_input_ids([1, 2, 3])
    assert len(ids) == v2_reranker.predefined_length - len(v2_reranker.sep_inputs) + 3 + len(v2_reranker.sep_inputs)


def test_forward_trains_the_head(v2_model_dir: Path) -> None:
    reranker = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype="float32")
    inputs = reranker.prepare_inputs([QUERY] * 2, DOCS[:2])
    out = reranker(**inputs, labels=torch.tensor([1.0, 0.0]))
    assert out.loss is not None and out.loss.requires_grad
    out.loss.backward()
    embeddings = reranker.model.get_input_embeddings().weight  # tied to the LM head in the fixture
    assert embeddings.grad is not None
    rows = embeddings.grad.abs().sum(dim=1)
    assert rows[reranker.yes_loc] > 0 and rows[reranker.no_loc] > 0  # the score direction gets gradients
    assert reranker.model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_subclass_overriding_task_prompt_takes_effect(v2_model_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    class Terse(MxbaiRerankV2):
        task_prompt = "Is the document relevant to the query? Answer 1 or 0.\nRelevance:"

    terse = Terse(str(v2_model_dir), device="cpu", torch_dtype="float32")
    ids = terse.encode_pairs([QUERY], DOCS[:1]).input_ids[0]
    text = terse.tokenizer.decode(ids)
    assert Terse.task_prompt in text and MxbaiRerankV2.task_prompt not in text
    with torch.inference_mode():
        logits = terse.model(input_ids=torch.tensor([ids])).logits[0, -1]
    score = terse.score_pairs([QUERY], DOCS[:1])[0]
    assert score == pytest.approx(float(logits[terse.yes_loc] - logits[terse.no_loc]), abs=1e-4)
    assert score != pytest.approx(v2_reranker.score_pairs([QUERY], DOCS[:1])[0], abs=1e-4)


def test_v1_forward_and_prepare_inputs(v1_reranker: MxbaiRerankV1) -> None:
    inputs = v1_reranker.prepare_inputs([QUERY] * 3, DOCS)
    with torch.inference_mode():
        out = v1_reranker(**inputs)
    np.testing.assert_allclose(torch.sigmoid(out.logits).numpy(), v1_reranker.score_pairs([QUERY] * 3, DOCS), atol=1e-5)


# -- defect 3: max_length, estimated_max, .to("cpu") -----------------------------------------
def test_max_length_none_or_zero_means_the_whole_window(v2_model_dir: Path, v1_model_dir: Path) -> None:
    default = MxbaiRerankV2(str(v2_model_dir), device="cpu")
    fixed = default.predefined_length
    assert default.max_length == 8192
    for value in (None, 0):
        assert MxbaiRerankV2(str(v2_model_dir), device="cpu", max_length=value).max_length == 32768 - fixed
        assert MxbaiRerankV1(str(v1_model_dir), device="cpu", max_length=value).max_length == 512
    with pytest.raises(ValueError, match="max_length"):
        MxbaiRerankV2(str(v2_model_dir), device="cpu", max_length=-1)


def test_estimated_max_zero_is_honoured(v2_model_dir: Path) -> None:
    reranker = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype="float32", estimated_max=0.0)
    raw = reranker.score_pairs([QUERY] * 3, DOCS)
    normalized = reranker.score_pairs([QUERY] * 3, DOCS, normalize=True)
    np.testing.assert_allclose(normalized, 1 / (1 + np.exp(-raw)), rtol=1e-5)


def test_to_cpu_keeps_the_dtype_of_a_model_on_the_cpu(v2_model_dir: Path) -> None:
    reranker = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype="bfloat16")
    reranker.to("cpu")
    assert reranker.dtype == torch.bfloat16 and reranker.model.dtype == torch.bfloat16
    assert reranker.info().dtype == "bfloat16"
    reranker.to("cpu", dtype=torch.float32)
    assert reranker.info().dtype == "float32"


# -- defect 5: warnings ---------------------------------------------------------------------
def test_no_deprecation_warnings_and_no_global_filters(v2_model_dir: Path) -> None:
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype="float32")
        reranker.rank(QUERY, DOCS)  # one query: the shared-prefix cache path
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
    assert warnings.filters == filters


# -- defect 6: threads ----------------------------------------------------------------------
def test_public_tokenizer_is_free_for_the_caller_while_ranking(v2_reranker: MxbaiRerankV2) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def use_tokenizer() -> None:
        try:
            while not stop.is_set():
                v2_reranker.tokenizer(["some text " * 50] * 16)
        except BaseException as exc:
            errors.append(exc)

    user = threading.Thread(target=use_tokenizer)
    user.start()
    try:
        for _ in range(3):
            v2_reranker.rank(QUERY, DOCS * 5)
    finally:
        stop.set()
        user.join()
    assert errors == []


def test_concurrent_calls_take_turns_on_the_model(v2_reranker: MxbaiRerankV2) -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def enter(*_: object) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])

    def leave(*_: object) -> None:
        with lock:
            active[0] -= 1

    handles = [v2_reranker.head.register_forward_pre_hook(enter), v2_reranker.head.register_forward_hook(leave)]
    try:
        threads = [
            threading.Thread(target=v2_reranker.rank, args=(f"{QUERY} {i}", DOCS * 4), kwargs={"batch_size": 2})
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for h in handles:
            h.remove()
    assert peak[0] == 1


# -- defect 7: budgets and grouping ---------------------------------------------------------
def _batch_shapes(reranker: TransformerReranker) -> tuple[list[tuple[int, int]], list]:
    shapes: list[tuple[int, int]] = []

    def record(_module: object, args: tuple) -> None:
        shapes.append(tuple(args[0].input_ids.shape))

    return shapes, [reranker.head.register_forward_pre_hook(record)]


def test_v1_pairs_of_several_queries_share_batches(v1_reranker: MxbaiRerankV1) -> None:
    shapes, handles = _batch_shapes(v1_reranker)
    try:
        queries = ["first question", "second question", "third question"]
        encoded = v1_reranker.encode_pairs([q for q in queries for _ in range(3)], [DOCS[0]] * 9)
        assert len({len(ids) for ids in encoded.input_ids}) == 1  # one length: one batch fits all
        v1_reranker.score_encoded(encoded, max_batch_tokens=100_000)
    finally:
        for h in handles:
            h.remove()
    assert shapes[0][0] == 9 and len(shapes) == 1  # not one batch per query


def test_single_pairs_of_many_queries_share_batches(v2_reranker: MxbaiRerankV2) -> None:
    shapes, handles = _batch_shapes(v2_reranker)
    try:
        v2_reranker.score_pairs([f"question number {i}" for i in range(8)], [DOCS[0]] * 8, max_batch_tokens=100_000)
    finally:
        for h in handles:
            h.remove()
    assert len(shapes) == 1 and shapes[0][0] == 8


def test_budget_counts_the_cached_prefix(v2_reranker: MxbaiRerankV2) -> None:
    docs = ["word " * 20] * 6
    encoded = v2_reranker.encode_pairs([QUERY] * 6, docs)
    full = len(encoded.input_ids[0])
    shapes, handles = _batch_shapes(v2_reranker)
    try:
        v2_reranker.score_encoded(encoded, max_batch_tokens=2 * full)
    finally:
        for h in handles:
            h.remove()
    suffix = shapes[0][1]
    assert suffix < full  # the shared prefix was cached...
    assert all(rows * full <= 2 * full for rows, _ in shapes)  # ...and counted against the budget


# -- defects 8 and 11: loading ---------------------------------------------------------------
def test_hub_keywords_reach_the_tokenizer(tmp_path: Path, v2_model_dir: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(v2_model_dir, root / "sub", symlinks=True)  # config, weights and tokenizer only in sub/
    reranker = load(str(root), subfolder="sub", device="cpu", torch_dtype="float32")
    assert reranker.rank(QUERY, DOCS)[0].score is not None


def test_unknown_model_type_and_unavailable_devices(tmp_path: Path, v2_model_dir: Path) -> None:
    odd = _config_only(tmp_path / "odd", {"model_type": "frobnicator", "architectures": ["FrobForCausalLM"]})
    with pytest.raises(ModelLoadError, match="frobnicator"):
        load(str(odd))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load(str(v2_model_dir), device="cuda")
    with pytest.raises(ModelLoadError, match="invalid device 'cdua'"):
        load(str(v2_model_dir), device="cdua")


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_a_model_folder_without_tokenizer_files_is_refused(
    tmp_path: Path, which: str, v2_model_dir: Path, v1_model_dir: Path
) -> None:
    src = v2_model_dir if which == "v2" else v1_model_dir
    dst = tmp_path / which
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        (dst / name).symlink_to(src / name)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load(str(dst), device="cpu")


# -- bounded tokenization --------------------------------------------------------------------
def test_huge_documents_are_cut_before_tokenizing_without_changing_the_tokens(v2_reranker: MxbaiRerankV2) -> None:
    huge = "lorem ipsum dolor sit amet, " * 40_000  # ~1.1 MB
    cut = v2_reranker.encode_pairs([QUERY], [huge]).input_ids[0]
    tok = v2_reranker.tokenizer
    full_doc = tok("document: " + huge, add_special_tokens=False)["input_ids"]
    encoder = v2_reranker.engine.encoder
    q = tok("query: " + QUERY, add_special_tokens=False)["input_ids"]
    expected = encoder.prefix_ids + (q + encoder.sep_ids + full_doc)[: v2_reranker.max_length] + encoder.tail_ids
    assert cut == expected
