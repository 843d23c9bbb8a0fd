"""``mxbai-rerank convert``: a reranker as a sequence-classification or ONNX checkpoint."""

from __future__ import annotations

from contextlib import nullcontext

import click

from ._common import FAMILY_CHOICES, MODEL_ENV, CliUsageError, OneLineErrorCommand, check_model_source, handle_errors

__all__ = ["convert"]

_EPILOG = """\b
Examples:
  mxbai-rerank convert -m mixedbread-ai/mxbai-rerank-base-v2 --to seq-cls --output base-v2-seq-cls/
  mxbai-rerank convert -m mixedbread-ai/mxbai-rerank-base-v2 --to onnx --quantize int8 --output base-v2-onnx/
  mxbai-rerank convert -m mixedbread-ai/mxbai-rerank-xsmall-v1 --to onnx --output xsmall-v1-onnx/

\b
seq-cls (v2 models): a one-label Qwen2ForSequenceClassification whose logit is the raw score,
with the prompt as chat_template.jinja, a sentence-transformers CrossEncoder configuration (raw
scores) and a README; the vLLM launch line is printed. mxbai-rerank loads the folder too.
onnx (v1 and v2): model.onnx (or model_int8.onnx) with the score head inside: inputs input_ids
and attention_mask (right padded), output one raw score per pair; load it with
mxbai_rerank.load(DIR, backend="onnx") (or "onnx-int8" for a quantized graph).
The output folder is written completely or not at all; an existing one needs --overwrite."""


@click.command("convert", cls=OneLineErrorCommand, epilog=_EPILOG)
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    envvar=MODEL_ENV,
    show_envvar=True,
    help="Hugging Face hub id or local model directory of the reranker to convert.",
)
@click.option("--to", "target", type=click.Choice(["seq-cls", "onnx"]), required=True, help="What to convert to.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="The folder to write.")
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="onnx: int8 dynamic quantization.",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="seq-cls: the saved weights' dtype; auto: the checkpoint's.",
)
@click.option(
    "--family",
    type=click.Choice(FAMILY_CHOICES),
    default="auto",
    show_default=True,
    help="Model family; auto detects it from the model's config.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@handle_errors
def convert(model: str, target: str, output: str, quantize: str, dtype: str, family: str, overwrite: bool) -> None:
    """Convert a reranker so other stacks (transformers, sentence-transformers, vLLM, ONNX Runtime) can run it."""
    from .._engine._loading import quiet_transformers
    from ..convert._output import check_output_dir
    from ._common import _offline_hub

    if target == "seq-cls" and quantize != "none":
        raise CliUsageError("--quantize applies to --to onnx")
    if target == "onnx" and dtype != "auto":
        raise CliUsageError("--dtype applies to --to seq-cls (ONNX graphs are exported in float32)")
    check_output_dir(output, overwrite)  # before any download or load
    offline = check_model_source(model)
    chosen = None if family == "auto" else family
    with _offline_hub() if offline else nullcontext(), quiet_transformers(enabled=True):
        if target == "seq-cls":
            from ..convert import convert_to_seq_cls

            result = convert_to_seq_cls(
                model, output, family=chosen, dtype=None if dtype == "auto" else dtype, overwrite=overwrite
            )
            click.echo(f"wrote {result.output} ({result.source_family} -> mxbai-v2-seq-cls)", err=True)
            click.echo("serve it with vLLM (raw scores on /score and /rerank):", err=True)
            click.echo(result.vllm_command)
        else:
            from ..convert import convert_to_onnx

            onnx_result = convert_to_onnx(
                model, output, family=chosen, quantize=None if quantize == "none" else quantize, overwrite=overwrite
            )
            click.echo(f"wrote {onnx_result.output} ({onnx_result.graph}, {onnx_result.family})", err=True)
