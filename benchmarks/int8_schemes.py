"""int8 schemes against the quality gate: which quantization keeps the ranking, and at what speed.

For each scheme, an ONNX graph exported by ``mxbai-rerank convert --to onnx`` is quantized with
ONNX Runtime and loaded through the ``onnx`` backend:

* ``dynamic``: ``quantize_dynamic`` (int8 weights, activations per tensor): the ``onnx-int8`` backend;
* ``dynamic-perchannel-nodown``: per-channel weights, the MLP's down projection left in float32;
* ``weights8-f32``: weight-only 8-bit ``MatMulNBits`` (blocks of 32), float32 compute;
* ``weights8-i8``: the same with int8 compute (``accuracy_level=4``, activations per block);

and, beside them, the ``int8`` backend (PyTorch, per-token activation scales, per-channel
weights) with float32 and with bf16 around its int8 products, and bf16 without any int8.

Quality: Kendall's tau and equal top-10 sets over 10 queries x 100 passages against the float32
torch model, on the tiny v2 and v1 fixtures. Speed: ``rank()`` of 1 query x 32 passages on the
0.5B shape (``--speed``), beside the default bf16/float32 torch path. Prints a table; writes
``results/int8_schemes.json``.

    .venv/bin/python benchmarks/int8_schemes.py              # quality on the fixtures (a minute)
    .venv/bin/python benchmarks/int8_schemes.py --speed      # + the 0.5B shape (export: minutes, ~9 GB)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import CACHE, benchmark_checkpoint, fixture_models, machine

from mxbai_rerank import load
from mxbai_rerank.convert._agreement import ranking_agreement
from mxbai_rerank.convert._onnx import MANIFEST, convert_to_onnx
from mxbai_rerank.evaluation import generate_workload

HERE = Path(__file__).resolve().parent


def _dynamic(per_channel: bool = False, float_down: bool = False) -> Callable[[Path, Path, dict], None]:
    def make(source: Path, target: Path, config: dict[str, Any]) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        down: list[str] = []
        if float_down:  # the down projection: the MatMul whose weight has intermediate_size rows
            model = onnx.load(str(source), load_external_data=False)
            weights = {i.name: i for i in model.graph.initializer}
            rows = config["intermediate_size"]
            down = [
                n.name
                for n in model.graph.node
                if n.op_type == "MatMul" and n.input[1] in weights and weights[n.input[1]].dims[0] == rows
            ]
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                         per_channel=per_channel, nodes_to_exclude=down,
                         extra_options={"MatMulConstBOnly": True})  # fmt: skip

    return make


def _weight_only(accuracy_level: int | None) -> Callable[[Path, Path, dict], None]:
    def make(source: Path, target: Path, config: dict[str, Any]) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source)), bits=8, block_size=32, is_symmetric=True, accuracy_level=accuracy_level
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)

    return make


SCHEMES = {
    "dynamic": _dynamic(),
    "dynamic-perchannel-nodown": _dynamic(per_channel=True, float_down=True),
    "weights8-f32": _weight_only(None),
    "weights8-i8": _weight_only(4),
}


def quantized_folders(model: Path, work: Path) -> dict[str, Path]:
    """One ONNX folder per scheme (the float32 export, its graph replaced by the quantized one)."""
    exported = work / "float32"
    work.mkdir(parents=True, exist_ok=True)
    if not (exported / MANIFEST).exists():
        convert_to_onnx(str(model), exported, overwrite=True)
    manifest = json.loads((exported / MANIFEST).read_text())
    config = json.loads((exported / "config.json").read_text())
    folders = {}
    for name, make in SCHEMES.items():
        folder = work / name
        if not (folder / MANIFEST).exists():
            shutil.copytree(exported, folder, ignore=shutil.ignore_patterns("model*.onnx*"))
            make(exported / manifest["graph"], folder / "model_q.onnx", config)
            (folder / MANIFEST).write_text(json.dumps({**manifest, "graph": "model_q.onnx"}))
        folders[name] = folder
    return folders


def quality(model: Path, work: Path) -> dict[str, Any]:
    workload = generate_workload(10, 100, seed=0)
    pairs = list(zip(workload.queries, workload.documents, strict=True))
    reference = load(str(model), device="cpu", torch_dtype="float32")
    ref = [reference.score_pairs([q] * len(d), d) for q, d in pairs]
    loaders: dict[str, Callable[[], Any]] = {
        name: lambda f=folder: load(str(f), backend="onnx") for name, folder in quantized_folders(model, work).items()
    }
    for dtype in ("float32", "bfloat16"):  # the int8 backend (PyTorch, per-token), and no int8 at all
        loaders[f"per-token-{dtype}"] = lambda d=dtype: load(str(model), backend="int8", torch_dtype=d)
    loaders["no-int8-bfloat16"] = lambda: load(str(model), device="cpu", torch_dtype="bfloat16")
    out = {}
    for name, make in loaders.items():
        quantized = make()
        agreement = ranking_agreement(ref, [quantized.score_pairs([q] * len(d), d) for q, d in pairs], top_k=10)
        out[name] = {"min_tau": agreement.min_tau, "same_top10": agreement.same_top_k_count}
        print(f"{model.name} {name}: tau {agreement.min_tau:.3f}, same top-10 {agreement.same_top_k_count}/10")
    return out


def speed(model: Path, work: Path) -> dict[str, float]:
    passages = json.loads((CACHE / "passages-qwen2-base-random-bf16-32-0.json").read_text())
    query, docs = passages["query"], passages["documents"]
    loaders = {
        "torch (default dtype)": lambda: load(str(model), device="cpu"),
        "per-token (int8 backend)": lambda: load(str(model), backend="int8"),
    }
    for name, folder in quantized_folders(model, work).items():
        loaders[name] = lambda f=folder: load(str(f), backend="onnx")
    out = {}
    for name, make in loaders.items():
        reranker = make()
        reranker.rank(query, docs[:4])
        times = []
        for _ in range(2):
            t = time.perf_counter()
            reranker.rank(query, docs)
            times.append(time.perf_counter() - t)
        out[name] = len(docs) / min(times)
        print(f"0.5B {name}: {out[name]:.2f} docs/s")
        del reranker
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true", help="also time the 0.5B shape (exports it: minutes)")
    parser.add_argument("--work", default=None, help="folder for the exported graphs (default: a temporary one)")
    parser.add_argument("--output", default=str(HERE / "results" / "int8_schemes.json"))
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="int8-schemes-"))
    report: dict[str, Any] = {"machine": machine(), "quality": {}, "speed_docs_per_s": None}
    for name, build in (("tiny-qwen2", fixture_models.build_qwen2_reranker),
                        ("tiny-deberta", fixture_models.build_deberta_reranker)):  # fmt: skip
        model = CACHE / f"{name}-fixture"
        if not (model / "config.json").exists():
            build(model)
        report["quality"][name] = quality(model, work / name)
    if args.speed:
        report["speed_docs_per_s"] = speed(benchmark_checkpoint("base"), work / "base")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
