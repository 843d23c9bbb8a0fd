"""``--to seq-cls``: a v2 causal-LM reranker as a one-label ``*ForSequenceClassification`` checkpoint.

The v2 raw score is ``logit("1") - logit("0") = h_last @ (W["1"] - W["0"]) (+ b["1"] - b["0"])``
for the last hidden state ``h_last`` of the prompt. A sequence classifier with one label
computes ``h_last @ score.weight[0]`` at the last non-pad token, so a score row of
``W["1"] - W["0"]`` makes the classifier's logit the raw score (Qwen2's classifier has no bias,
and neither has its LM head; a checkpoint whose answer-token biases differ is refused).

Written next to the weights:

* ``config.json`` - architecture ``Qwen2ForSequenceClassification`` (or the causal LM's
  ``*ForSequenceClassification``), ``num_labels=1``, the ``mxbai_rerank`` marker (family
  ``mxbai-v2-seq-cls``, ``estimated_max``, the source) and the sentence-transformers
  ``activation_fn`` (identity: raw scores);
* ``chat_template.jinja`` - the prompt as a chat/score template over ``query`` and
  ``document`` messages (and an optional ``system`` message, the instruction), read by
  sentence-transformers' ``CrossEncoder`` and passed to vLLM with ``--chat-template``;
* the tokenizer files and a ``README.md`` with the commands.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._encoding import PromptTemplate
from ._output import ConversionError, atomic_output_dir, check_output_dir

__all__ = ["SEQ_CLS_FAMILY", "SeqClsResult", "convert_to_seq_cls", "score_template", "vllm_command"]

logger = logging.getLogger(__name__)

SEQ_CLS_FAMILY = "mxbai-v2-seq-cls"
TEMPLATE_FILE = "chat_template.jinja"
# sentence-transformers reads the CrossEncoder's activation from config.json; identity = raw scores.
_IDENTITY = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class SeqClsResult:
    """What ``convert_to_seq_cls`` wrote: the folder, the family it came from, the launch line."""

    output: Path
    source_family: str
    estimated_max: float | None
    vllm_command: str


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja unescapes string literals like Python's ``unicode-escape``)."""
    return json.dumps(text, ensure_ascii=True)


def _split_field(pattern: str, field: str) -> tuple[str, str]:
    before, marker, after = pattern.partition("{" + field + "}")
    if not marker:
        raise ConversionError(f"the prompt pattern {pattern!r} has no {{{field}}} field")
    return before, after


def score_template(template: PromptTemplate) -> str:
    """The prompt as a Jinja chat template over ``query``/``document`` (and optional ``system``) messages.

    Renders ``prefix [instruction sep] query sep document sep task suffix``: the string this
    package tokenizes piece by piece. Message content may be a string or a list of
    ``{"type": "text", "text": ...}`` parts. Every literal is a Jinja expression, so no
    trailing newline of the template source can be dropped by the renderer.
    """
    i_before, i_after = _split_field(template.instruction, "instruction")
    q_before, q_after = _split_field(template.query, "query")
    d_before, d_after = _split_field(template.document, "document")
    sep = _literal(template.sep)
    return (
        "{%- macro text(role) -%}\n"
        "{%- for m in messages if m.role == role -%}{%- if loop.first -%}\n"
        "{%- if m.content is string -%}{{ m.content }}"
        "{%- else -%}{%- for part in m.content -%}{{ part.text }}{%- endfor -%}{%- endif -%}\n"
        "{%- endif -%}{%- endfor -%}\n"
        "{%- endmacro -%}\n"
        '{%- set instruction = text("system") -%}\n'
        f"{{{{- {_literal(template.prefix)} -}}}}\n"
        f"{{%- if instruction -%}}{{{{- {_literal(i_before)} + instruction + {_literal(i_after)} + {sep} -}}}}"
        "{%- endif -%}\n"
        f'{{{{- {_literal(q_before)} + text("query") + {_literal(q_after)} + {sep} -}}}}\n'
        f'{{{{- {_literal(d_before)} + text("document") + {_literal(d_after)} + {sep} -}}}}\n'
        f"{{{{- {_literal(template.task + template.suffix)} -}}}}\n"
    )


def vllm_command(output: Path, estimated_max: float | None) -> str:
    """The ``vllm serve`` line for the converted folder: raw scores on ``/score`` and ``/rerank``."""
    folder = shlex.quote(str(output))
    template = shlex.quote(str(output / TEMPLATE_FILE))
    return (
        f"vllm serve {folder} --runner pooling --chat-template {template} "
        "--pooler-config '{\"use_activation\": false}'"
    )


def _readme(output: Path, source: str, estimated_max: float | None, command: str) -> str:
    centre = "12.0" if estimated_max is None else f"{estimated_max:g}"
    return f"""# {output.name}

`{source}` converted by `mxbai-rerank convert --to seq-cls`: a one-label sequence classifier whose
logit is the reranker's raw score, `logit("1") - logit("0")` of the original model.

The prompt is in `{TEMPLATE_FILE}` (roles `query`, `document`, optional `system` = instruction).
`normalize=True` scores are `sigmoid(raw - {centre} / 2)` (`estimated_max` = {centre}).

- mxbai-rerank: `mxbai_rerank.load("{output.name}")` (family `{SEQ_CLS_FAMILY}`).
- transformers: `AutoModelForSequenceClassification.from_pretrained(...)`, fed the prompt's token ids;
  `logits[:, 0]` is the raw score.
- sentence-transformers: `CrossEncoder("{output.name}").predict([(query, document), ...])` gives raw
  scores (the activation is the identity; pass `activation_fn=torch.nn.Sigmoid()` for sigmoid(raw)).
- vLLM (`/score`, `/rerank`, raw scores):

      {command}

  Drop the `--pooler-config` for sigmoid(raw) instead of raw scores.

These stacks tokenize the rendered prompt as one string; mxbai-rerank (and upstream) tokenize its
pieces separately and truncate the document inside the prompt. Scores agree exactly when the
query and the document end in a letter or digit and the pair fits the window; a final punctuation
mark may merge with the following newline into one token and move the score slightly.
"""


def convert_to_seq_cls(
    model: str,
    output: str | os.PathLike[str],
    *,
    family: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    **hub_kwargs: Any,
) -> SeqClsResult:
    """Write ``model`` (a v2 reranker) as a one-label sequence classifier into ``output``.

    ``dtype``: the saved weights' dtype (default: the checkpoint's). The score row is computed
    in float32 from the loaded rows, then stored in that dtype. Raises :class:`ConversionError`
    for a model that is not a v2 causal LM, and before anything is loaded or written for an
    output folder that exists (unless ``overwrite``).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .._loader import identify_family
    from ..families.mxbai_v2 import MxbaiV2Family
    from ..families.mxbai_v2_seq_cls import MxbaiV2SeqClsFamily

    check_output_dir(output, overwrite)
    chosen = identify_family(model, family, **hub_kwargs)
    if isinstance(chosen, MxbaiV2SeqClsFamily):
        raise ConversionError(f"{model!r} is already a converted sequence classifier ({chosen.name})")
    if not isinstance(chosen, MxbaiV2Family):
        raise ConversionError(
            f"{model!r} is a {chosen.name} model; --to seq-cls converts v2 (causal LM) rerankers. A v1 model already "
            "is a one-logit sequence classifier: use it as it is, or convert it --to onnx"
        )
    from .. import load
    from .._encoding import PromptPairEncoder

    config = AutoConfig.from_pretrained(model, **hub_kwargs)
    save_dtype = _dtype(dtype or getattr(config, "dtype", None) or getattr(config, "torch_dtype", None))
    reranker = load(model, family=chosen, device="cpu", torch_dtype=save_dtype, **hub_kwargs)
    engine = reranker.engine
    encoder = engine.encoder
    assert isinstance(encoder, PromptPairEncoder)
    causal = engine.model
    lm_head = causal.get_output_embeddings()
    pos, neg = encoder.positive_id, encoder.negative_id
    with torch.no_grad():
        # (H,) score row in float32 from the rows as loaded; stored in ``save_dtype``.
        row = lm_head.weight[pos].float() - lm_head.weight[neg].float()
        bias = getattr(lm_head, "bias", None)
        if bias is not None and float(bias[pos].float() - bias[neg].float()) != 0.0:
            raise ConversionError(
                f"{model!r}: the LM head's biases of the answer tokens differ; a sequence classifier's score "
                "layer has no bias, so the converted logit could not equal the raw score"
            )
    architecture = _seq_cls_architecture(causal)
    seq_config = copy.deepcopy(causal.config)
    seq_config.architectures = [architecture]
    seq_config.num_labels = 1
    seq_config.id2label = {0: "relevance"}
    seq_config.label2id = {"relevance": 0}
    if getattr(seq_config, "pad_token_id", None) is None:
        # The classifier pools the rightmost non-pad token, so it needs a pad id for batches.
        seq_config.pad_token_id = engine.pad_token_id
    seq_config.mxbai_rerank = {
        "family": SEQ_CLS_FAMILY,
        "estimated_max": reranker.estimated_max,
        "source": str(model),
        "source_family": chosen.name,
        "score": "raw: logit('1') - logit('0') of the source model",
    }
    seq_config.sentence_transformers = {"activation_fn": _IDENTITY}
    seq_config.dtype = save_dtype
    with torch.device("meta"):  # no weights are allocated: the backbone is moved over below
        seq = AutoModelForSequenceClassification.from_config(seq_config)
    prefix = causal.base_model_prefix
    setattr(seq, prefix, getattr(causal, prefix))
    score = torch.nn.Linear(row.shape[0], 1, bias=False, dtype=save_dtype)
    with torch.no_grad():
        score.weight.copy_(row[None].to(save_dtype))  # (1, H)
    seq.score = score
    if any(p.is_meta for p in seq.parameters()) or any(b.is_meta for b in seq.buffers()):
        raise ConversionError(f"cannot convert {causal.__class__.__name__}: its classifier has unexpected layers")
    tokenizer = copy.deepcopy(engine.tokenizer)
    tokenizer.chat_template = score_template(encoder.template)
    with atomic_output_dir(output, overwrite) as tmp:
        seq.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        final = Path(os.path.expanduser(str(output))).absolute()
        command = vllm_command(final, reranker.estimated_max)
        (tmp / "README.md").write_text(_readme(final, str(model), reranker.estimated_max, command), encoding="utf-8")
    return SeqClsResult(final, chosen.name, reranker.estimated_max, command)


def _dtype(value: Any) -> Any:
    import torch

    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    name = aliases.get(name, name)
    if name not in ("float32", "bfloat16", "float16"):
        raise ConversionError(f"unsupported dtype {value!r}; use float32, bfloat16 or float16")
    return getattr(torch, name)


def _seq_cls_architecture(causal: Any) -> str:
    name = type(causal).__name__
    if not name.endswith("ForCausalLM"):
        raise ConversionError(f"expected a *ForCausalLM model, got {name}")
    return name.removesuffix("ForCausalLM") + "ForSequenceClassification"
