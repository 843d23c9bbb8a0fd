"""int8 CPU backends against float32.

``int8`` (PyTorch, per-token W8A8): its products against their definition, written out here in
float64; a row's result does not depend on the rows batched with it; the quality gate of the
issue (Kendall's tau >= 0.95 for 1 query x 100 passages, identical top-10 sets in >= 9 of 10
queries, nDCG@10 within 0.01) on both fixtures, where everything but the int8 products runs in
float32 (``GATE_DTYPE``): the fixtures' random weights leave scores so near-tied that bf16 alone,
without any int8, already moves the v2 fixture's top-10 sets in 2 of 10 queries.

``onnx-int8`` (ONNX Runtime, activations quantized per tensor): the gate is NOT met on the
fixtures (measured: v2 tau 0.90-0.93 and 5/10 equal top-10 sets, v1 tau 0.94-0.97 and 6/10),
kept as a strict expected failure; regression guards hold what was measured.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fixture_models
from mxbai_rerank import load
from mxbai_rerank._engine import _int8
from mxbai_rerank.cli._common import BACKEND_CHOICES
from mxbai_rerank.convert._agreement import kendall_tau, ranking_agreement
from mxbai_rerank.evaluation import generate_workload

GATE_DTYPE = "float32"


@pytest.fixture(scope="module")
def workload():
    return generate_workload(10, 100, seed=0)


def _scores(reranker, workload) -> list[np.ndarray]:
    return [reranker.score_pairs([q] * len(d), d) for q, d in zip(workload.queries, workload.documents, strict=True)]


def _ndcg(reference, candidate, tmp_path: Path, **size: int) -> list[float]:
    """nDCG@10 of both on the docstring test collection (40 queries, top 20 of BM25, by default)."""
    sys.path.insert(0, str(Path(__file__).parent / "evaluation"))
    from docstring_beir import build_docstring_beir

    from mxbai_rerank.evaluation import evaluate

    collection = build_docstring_beir(tmp_path / "docstrings", **size)
    return [evaluate(r, collection, top_k=20).reranked["ndcg@10"] for r in (reference, candidate)]


def test_backend_names_match_the_engine() -> None:
    from mxbai_rerank._engine._backends import BACKENDS

    assert tuple(sorted(BACKENDS)) == BACKEND_CHOICES


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


# --- int8: the kernels -------------------------------------------------------------------


def _dequantized(weight: torch.Tensor) -> torch.Tensor:
    """The int8 per-channel weight as float64 (the range this CPU's kernels take)."""
    weight = weight.double()
    sw = weight.abs().amax(1, keepdim=True) / _int8.weight_qmax()
    return torch.round(weight / sw) * sw


def _definition(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-token int8 activations times per-channel int8 weights, in float64."""
    x = x.double()
    sx = x.abs().amax(1, keepdim=True) / 127
    y = (torch.round(x / sx) * sx) @ _dequantized(weight).T
    return y if bias is None else y + bias.double()


@pytest.fixture(scope="module")
def compiled() -> bool:
    return _int8._Kernels.compile()


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_is_its_definition(kernel: str, with_bias: bool, compiled: bool) -> None:
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(40, 24, bias=with_bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, 40, generator=gen))
        if with_bias:
            linear.bias.copy_(torch.randn(24, generator=gen))
    x = torch.randn(2, 9, 40, generator=gen)
    fn = _int8._linear_eager if kernel == "eager" else _int8._Kernels.linear
    got = fn(x.reshape(-1, 40), *_int8._Weight(linear.weight).args(), linear.bias)
    expected = _definition(x.reshape(-1, 40), linear.weight, linear.bias)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-5)
    # Through the module: same numbers, input shape kept; and not the float product.
    module = _int8.Int8Linear(linear)
    assert module(x).shape == (2, 9, 24)
    torch.testing.assert_close(module(x).double(), expected.reshape(2, 9, 24), atol=1e-4, rtol=1e-5)
    assert (linear(x) - module(x)).abs().max() > 1e-3


def test_bfloat16_input_keeps_its_dtype(compiled: bool) -> None:
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 32, generator=gen)
    x = torch.randn(5, 32, generator=gen).bfloat16()
    got = _int8._Kernels.linear(x, *_int8._Weight(weight).args(), None)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), _definition(x, weight, None), atol=0.05, rtol=0.02)


def test_a_row_does_not_depend_on_its_batch(compiled: bool) -> None:
    """Per-token scales: the same row gives the same bits alone or beside a 100x outlier row
    (a per-tensor scale would coarsen every other row)."""
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(2)
    weight = _int8._Weight(torch.randn(24, 40, generator=gen))
    x = torch.randn(50, 40, generator=gen)
    x[7] *= 100
    for fn in (_int8._linear_eager, _int8._Kernels.linear):
        batch = fn(x, *weight.args(), None)
        for i in (0, 7, 49):
            assert torch.equal(fn(x[i : i + 1], *weight.args(), None), batch[i : i + 1])


def test_gated_mlp_is_the_composition_of_int8_products(compiled: bool) -> None:
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(3)

    class SwiGLU(nn.Module):  # Qwen2's MLP, as transformers defines it
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj, self.up_proj = nn.Linear(32, 48, bias=False), nn.Linear(32, 48, bias=False)
            self.down_proj = nn.Linear(48, 32, bias=False)
            self.act_fn = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    mlp = SwiGLU()
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    assert _int8.Int8GatedMLP.fits(mlp)
    x = torch.randn(3, 6, 32, generator=gen)
    rows = x.reshape(-1, 32)
    h = torch.nn.functional.silu(_definition(rows, mlp.gate_proj.weight, None)) * _definition(
        rows, mlp.up_proj.weight, None
    )
    expected = _definition(h, mlp.down_proj.weight, None).reshape(3, 6, 32)
    quantized = _int8.Int8GatedMLP(mlp)
    whole = quantized(x)
    torch.testing.assert_close(whole.double(), expected, atol=2e-3, rtol=1e-4)
    quantized.chunk_rows = 5  # 18 rows in chunks of at most 5: rows are independent, same numbers
    torch.testing.assert_close(quantized(x), whole, atol=0, rtol=0)
    # An unquantized block's MLP in row chunks: the same function of x (float32 products of
    # fewer rows may round differently in the last bit).
    chunked = _int8.RowChunkedMLP(mlp, chunk_rows=4)
    torch.testing.assert_close(chunked(x), mlp(x), atol=1e-5, rtol=1e-5)
    calls: list[int] = []
    mlp.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    chunked(x)
    assert calls == [4, 4, 4, 4, 2]  # near-equal chunks of at most 4 rows


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_refined_rows_carry_about_15_bit_activations(kernel: str, compiled: bool) -> None:
    """Refined rows: x times the int8 weight with x nearly exact (two int8 terms); the other
    rows: the same bits as without refinement."""
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(4)
    weight, bias = torch.randn(24, 40, generator=gen), torch.randn(24, generator=gen)
    x = torch.randn(9, 40, generator=gen)
    rows = torch.tensor([1, 4, 8])
    fn = _int8._linear_eager if kernel == "eager" else _int8._Kernels.linear
    plain = fn(x, *_int8._Weight(weight).args(), bias)
    refined = fn(x, *_int8._Weight(weight).args(), bias, rows)
    others = [i for i in range(9) if i not in rows.tolist()]
    assert torch.equal(refined[others], plain[others])
    exact_x = x.double() @ _dequantized(weight).T + bias.double()  # only the weight rounded
    plain_err = (plain[rows].double() - exact_x[rows]).abs().max()
    refined_err = (refined[rows].double() - exact_x[rows]).abs().max()
    assert refined_err < plain_err / 30, (refined_err, plain_err)
    torch.testing.assert_close(refined[rows].double(), exact_x[rows], atol=2e-3, rtol=1e-4)


def test_refined_rows_in_the_gated_mlp(compiled: bool) -> None:
    assert compiled, "torch.compile of the int8 kernels failed here"
    gen = torch.Generator().manual_seed(5)
    gate_up, down = torch.randn(96, 32, generator=gen), torch.randn(32, 48, generator=gen)
    x = torch.randn(7, 32, generator=gen)
    rows = torch.tensor([0, 6])
    args = (_int8._Weight(gate_up).args(), _int8._Weight(down).args())
    plain, refined = _int8._Kernels.gated_mlp(x, *args), _int8._Kernels.gated_mlp(x, *args, rows)
    assert torch.equal(refined[1:6], plain[1:6])
    gate, up = (x.double() @ _dequantized(gate_up).T).chunk(2, dim=-1)
    exact_x = (torch.nn.functional.silu(gate) * up) @ _dequantized(down).T
    plain_err = (plain[rows].double() - exact_x[rows]).abs().max()
    refined_err = (refined[rows].double() - exact_x[rows]).abs().max()
    assert refined_err < plain_err / 30, (refined_err, plain_err)


def test_avx2_kernels_get_7_bit_weights_and_stay_exact() -> None:
    """With oneDNN held to AVX2 (no VNNI: its int8 product saturates int16 pair sums), the probe
    picks 7-bit weights, and a product of 8-bit-range activations then matches its definition."""
    import os
    import subprocess

    code = (
        "import torch\n"
        "from mxbai_rerank._engine import _int8\n"
        "assert _int8.weight_qmax() == 63.0, _int8.weight_qmax()\n"
        "g = torch.Generator().manual_seed(0)\n"
        "w, x = torch.randn(64, 256, generator=g), torch.randn(32, 256, generator=g)\n"
        "got = _int8._linear_eager(x, *_int8._Weight(w).args(), None).double()\n"
        "sx = x.double().abs().amax(1, keepdim=True) / 127\n"
        "sw = w.double().abs().amax(1, keepdim=True) / 63\n"
        "want = (torch.round(x.double() / sx) @ torch.round(w.double() / sw).T) * sx * sw.T\n"
        "assert (got - want).abs().max() < 1e-3, (got - want).abs().max()\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "isa", ["AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX"]
)
def test_int8_product_runs_in_an_optimized_onednn_kernel(isa: str, dtype: str) -> None:
    """On every x86 ISA level the product runs in one of oneDNN's jit kernels, never in its
    reference one. With signed activations every level but AVX2 and AMX got ``ref_int8``
    (AVX2 + AVX-VNNI laptop chips, AVX-512 servers without AMX), measured over 1000x slower
    than float32 at the 0.5B shape. oneDNN names the kernel it ran when ``ONEDNN_VERBOSE=1``;
    the ISA is held with ``ONEDNN_MAX_CPU_ISA`` (a cap above this CPU's own ISA changes
    nothing). With bf16 activations (an engine in bf16) the same: on AVX2 a bf16 output also
    sends it to the reference kernel."""
    import os
    import subprocess

    code = (
        "import torch\n"
        "from mxbai_rerank._engine import _int8\n"
        "g = torch.Generator().manual_seed(0)\n"
        "w, x = torch.randn(64, 256, generator=g), torch.randn(32, 256, generator=g)\n"
        f"y = _int8._linear_eager(x.to(torch.{dtype}), *_int8._Weight(w).args(), None)\n"
        f"assert y.dtype == torch.{dtype}, y.dtype\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # onednn_verbose,v1,primitive,exec,cpu,matmul,<implementation>,...
    kernels = [line.split(",")[6] for line in done.stdout.splitlines() if ",exec,cpu,matmul," in line]
    assert kernels, done.stdout[-2000:]
    assert not [k for k in kernels if k.startswith("ref")], kernels


def test_engine_calls_compile_nothing_after_the_warm_up(v2_model_dir: Path) -> None:
    """The compiled kernels are warmed as an engine calls them (inference mode, its weights,
    its dtype), so scoring batches of shapes never seen compiles no new graph, for engines of
    three dtypes in one process: past dynamo's limit of 8 graphs per function a kernel would
    silently run eagerly. In a fresh process, since other tests here call the kernels outside
    inference mode."""
    import subprocess

    code = (
        "import sys, torch, torch._dynamo.utils as u\n"
        "from mxbai_rerank import load\n"
        "from mxbai_rerank.evaluation import generate_workload\n"
        "w = generate_workload(3, 20, seed=1)\n"
        "for dtype in ('bfloat16', 'float32', 'float16'):\n"
        "    r = load(sys.argv[1], backend='int8', torch_dtype=dtype)\n"
        "    assert r.engine.backend.quantized > 0\n"
        "    before = u.counters['frames']['total']\n"
        "    for q, d in zip(w.queries, w.documents):\n"
        "        r.score_pairs([q] * len(d), d)\n"
        "    r.score_pairs([w.queries[0]], [w.documents[0][0]])\n"
        "    assert u.counters['frames']['total'] == before, (dtype, before, dict(u.counters['frames']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(v2_model_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_tail_rows() -> None:
    """Flat positions of each row's last ``tail`` tokens in a right-padded batch."""
    assert _int8.tail_rows(torch.tensor([3, 5, 1]), 5, 2).tolist() == [1, 2, 8, 9, 10]
    assert _int8.tail_rows(torch.tensor([4]), 6, 0).tolist() == []


# --- int8: the backend on the fixtures ---------------------------------------------------


@pytest.fixture(scope="module", params=["v2", "v1"])
def reference(request: pytest.FixtureRequest, workload):
    """(name, checkpoint folder, float32 reranker, its scores of the workload), shared by both backends."""
    source = request.getfixturevalue(f"{request.param}_model_dir")
    reranker = load(str(source), device="cpu", torch_dtype="float32")
    return request.param, source, reranker, _scores(reranker, workload)


@pytest.fixture(scope="module")
def int8_pair(reference, workload):
    """(name, float32 reranker, int8 reranker, float32 scores, int8 scores) for one fixture."""
    name, source, reranker, ref = reference
    quantized = load(str(source), backend="int8", torch_dtype=GATE_DTYPE)
    return name, reranker, quantized, ref, _scores(quantized, workload)


def test_int8_backend_quantizes_the_blocks_after_the_first(int8_pair) -> None:
    name, _, quantized, ref, got = int8_pair
    engine = quantized.engine
    assert quantized.info().backend == "int8"
    blocks = list(_int8._blocks(engine.model))
    assert any(type(m) is nn.Linear for m in blocks[0].modules())  # the first block is left as it is
    for block in blocks[1:]:
        assert not any(type(m) is nn.Linear for m in block.modules())
        assert any(isinstance(m, _int8.Int8Linear) for m in block.modules())
    if name == "v2":
        assert all(isinstance(b.mlp, _int8.Int8GatedMLP) for b in blocks[1:])
        assert isinstance(blocks[0].mlp, _int8.RowChunkedMLP)  # unquantized, in row chunks
    assert engine.backend.quantized > 0
    assert engine.backend.tail == 0  # refining is opt-in
    assert all(np.isfinite(g).all() for g in got)
    assert max(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True)) > 1e-4  # it is int8


def test_default_skip_first_keeps_a_third_of_the_blocks_only_with_half_precision_around() -> None:
    assert _int8.default_skip_first(24, torch.bfloat16) == 8  # the 0.5B shape
    assert _int8.default_skip_first(28, torch.bfloat16) == 9  # the 1.5B shape
    assert _int8.default_skip_first(24, torch.float16) == 8
    assert _int8.default_skip_first(2, torch.bfloat16) == 1  # at least the first
    assert _int8.default_skip_first(24, torch.float32) == 1


@pytest.mark.parametrize(("dtype", "kept"), [("bfloat16", 2), ("float32", 1)])
def test_int8_engine_keeps_the_default_leading_blocks_unquantized(
    v2_model_dir: Path, tmp_path: Path, dtype: str, kept: int
) -> None:
    """A six-block v2 model: bf16 around the int8 products keeps the first two blocks (a third)
    unquantized, float32 the first; an explicit ``skip_first`` wins."""
    path = fixture_models.build_qwen2_reranker(
        tmp_path / "six", {**fixture_models.TINY_QWEN2, "num_hidden_layers": 6}, with_tokenizer=False
    )
    for file in v2_model_dir.iterdir():
        if file.is_file() and file.name != "config.json" and not file.name.endswith(".safetensors"):
            shutil.copy(file, path / file.name)
    for backend, expect in (
        (_int8.Int8Backend(compile=False), kept),
        (_int8.Int8Backend(skip_first=3, compile=False), 3),
    ):
        reranker = load(str(path), backend=backend, torch_dtype=dtype)
        blocks = list(_int8._blocks(reranker.engine.model))
        quantized = [any(isinstance(m, _int8.Int8Linear) for m in b.modules()) for b in blocks]
        assert quantized == [False] * expect + [True] * (6 - expect)
        assert backend.skipped == expect
        assert all(isinstance(b.mlp, _int8.RowChunkedMLP) for b in blocks[:expect])
        assert np.isfinite(reranker.score_pairs(["a query"], ["a document"])).all()


def test_float32_int8_engine_keeps_a_bf16_checkpoint_s_embeddings_and_scores_the_same(
    v2_model_dir: Path, tmp_path: Path, workload
) -> None:
    """With float32 around the int8 products, a bf16 checkpoint is loaded as it is (no float32
    copy of the whole model made only to be quantized): its token embeddings stay bf16 (their
    output is cast) and everything else is widened, so it scores exactly what the same
    weights in a float32 checkpoint score."""
    import shutil

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(v2_model_dir, dtype=torch.float32)
    for param in model.parameters():
        param.data = param.data.bfloat16().float()  # weights a bf16 checkpoint holds exactly
    wide, narrow = tmp_path / "float32", tmp_path / "bf16"
    for folder, dtype in ((wide, torch.float32), (narrow, torch.bfloat16)):
        shutil.copytree(v2_model_dir, folder)
        model.to(dtype).save_pretrained(folder)
    got = {}
    for folder in (wide, narrow):
        reranker = load(str(folder), backend="int8", torch_dtype="float32")
        got[folder] = _scores(reranker, workload)
        if folder == narrow:
            engine_model = reranker.engine.model
            embeddings = engine_model.get_input_embeddings().weight
            assert embeddings.dtype == torch.bfloat16
            others = [p for p in engine_model.parameters() if p is not embeddings]
            assert others and all(p.dtype == torch.float32 for p in others)
    for a, b in zip(got[wide], got[narrow], strict=True):
        np.testing.assert_array_equal(a, b)


def test_int8_batches_default_to_the_backend_s_token_budget(int8_pair, v2_model_dir: Path) -> None:
    """The int8 backend's smaller batches (less transient memory, same speed) are its default;
    a caller's max_batch_tokens still wins."""
    _, reranker, quantized, _, _ = int8_pair
    assert quantized.engine.max_batch_tokens == _int8.Int8Backend.default_max_batch_tokens
    assert quantized.engine.max_batch_tokens < reranker.engine.max_batch_tokens  # the CPU default
    assert load(str(v2_model_dir), backend="int8", max_batch_tokens=512).engine.max_batch_tokens == 512


def test_refining_the_prompt_tail_brings_v2_scores_nearer_float32(int8_pair, workload) -> None:
    """``exact_tail=None``: v2 refines its 55-token prompt tail (v1 has none) and moves nearer float32."""
    name, reference, _, ref, unrefined = int8_pair
    backend = _int8.Int8Backend(exact_tail=None)
    refined = load(str(reference.engine.model_id), backend=backend, torch_dtype=GATE_DTYPE)
    assert backend.tail == (len(refined.engine.encoder.tail_ids) if name == "v2" else 0)
    got = _scores(refined, workload)
    err = [float(np.abs(r - g).mean()) for r, g in zip(ref, got, strict=True)]
    err_unrefined = [float(np.abs(r - g).mean()) for r, g in zip(ref, unrefined, strict=True)]
    if name == "v1":  # nothing refined: the same numbers
        assert err == err_unrefined
    else:
        assert sum(err) < 0.7 * sum(err_unrefined), (err, err_unrefined)


def test_int8_ranking_gate(int8_pair) -> None:
    _, _, _, ref, got = int8_pair
    agreement = ranking_agreement(ref, got, top_k=10)
    assert agreement.min_tau >= 0.95 and agreement.same_top_k_count >= 9, agreement.to_dict()


def test_int8_ndcg_at_10_within_001(int8_pair, tmp_path: Path) -> None:
    _, reference, quantized, _, _ = int8_pair
    ndcg = _ndcg(reference, quantized, tmp_path)
    assert abs(ndcg[0] - ndcg[1]) <= 0.01, ndcg


def test_int8_scores_do_not_depend_on_the_batch(int8_pair, workload) -> None:
    _, _, quantized, _, got = int8_pair
    query, documents = workload.queries[0], workload.documents[0]
    alone = [quantized.score_pairs([query], [d])[0] for d in documents[:5]]
    np.testing.assert_allclose(alone, got[0][:5], atol=1e-4, rtol=0)


def test_int8_backend_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="skip_first"):
        _int8.Int8Backend(skip_first=-1)
    with pytest.raises(ValueError, match="exact_tail"):
        _int8.Int8Backend(exact_tail=-1)
    with pytest.raises(ValueError, match="no transformer blocks"):
        _int8.quantize_blocks(nn.Sequential(nn.Linear(2, 2)))


# --- onnx-int8 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(reference, tmp_path_factory: pytest.TempPathFactory, workload):
    """(name, float32 reranker, onnx-int8 reranker, float32 scores, onnx-int8 scores) for one fixture."""
    name, source, reranker, ref = reference
    mp = pytest.MonkeyPatch()
    mp.setenv("MXBAI_RERANK_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        quantized = load(str(source), backend="onnx-int8")
    finally:
        mp.undo()
    return name, reranker, quantized, ref, _scores(quantized, workload)


def test_onnx_int8_backend_runs_a_quantized_graph(pair) -> None:
    _, _, quantized, ref, got = pair
    info = quantized.info()
    assert (info.backend, info.dtype, info.device) == ("onnx-int8", "int8", "cpu")
    assert quantized.engine.head.graph.name == "model_int8.onnx"
    assert all(np.isfinite(g).all() for g in got)
    # Not float32: a quantized graph moves every score a little.
    assert max(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True)) > 1e-4


# Measured minima on the fixtures, with margin: a regression guard, not the quality gate.
_GUARD = {"v2": (0.85, 3), "v1": (0.90, 4)}


def test_onnx_int8_ranking_regression_guard(pair) -> None:
    name, _, _, ref, got = pair
    agreement = ranking_agreement(ref, got, top_k=10)
    min_tau, same = _GUARD[name]
    assert agreement.min_tau >= min_tau, agreement.to_dict()
    assert agreement.same_top_k_count >= same, agreement.to_dict()


@pytest.mark.xfail(strict=True, reason="per-tensor activation scales; unmet on the fixtures (module docstring)")
def test_onnx_int8_ranking_gate(pair) -> None:
    _, _, _, ref, got = pair
    agreement = ranking_agreement(ref, got, top_k=10)
    assert agreement.min_tau >= 0.95 and agreement.same_top_k_count >= 9, agreement.to_dict()


def test_onnx_int8_ndcg_at_10(pair, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    name, reference, quantized, _, _ = pair
    if name == "v2":  # measured 0.423 (float32) vs 0.390 (int8) on the random-weight v2 fixture
        request.applymarker(pytest.mark.xfail(strict=True, reason="unmet on the random-weight v2 fixture"))
    ndcg = _ndcg(reference, quantized, tmp_path, num_queries=12, num_distractors=20)
    assert abs(ndcg[0] - ndcg[1]) <= 0.01, ndcg
