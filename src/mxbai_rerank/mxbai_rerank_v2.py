"""v2 rerankers (Qwen2 causal LMs): ``mixedbread-ai/mxbai-rerank-{base,large}-v2``.

A thin shell over the scoring engine and the ``mxbai-v2`` family, with upstream 0.1.6's
model-level surface: the prompt attributes (override ``task_prompt`` & co. in a subclass to
change the prompt), ``cfg``, ``yes_loc``/``no_loc``, ``prepare_inputs``, ``forward``,
``normalize_scores``, and this module's ``RerankerOutput`` and ``estimated_max_cfg``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._encoding import PromptPairEncoder
from ._model import RerankerOutput, TransformerReranker
from ._registry import DEFAULT_MODEL, MODELS, get_family
from .families.mxbai_v2 import FAMILY, TEMPLATE, MxbaiV2Family
from .utils import sigmoid_normalize

__all__ = ["MxbaiRerankV2", "RerankerOutput", "estimated_max_cfg"]

# Upstream's table of ``estimated_max`` by hub name (the registry's MODELS is the source).
estimated_max_cfg: dict[str, float] = {
    spec.name: spec.estimated_max for spec in MODELS if spec.family == FAMILY.name and spec.estimated_max is not None
}


class MxbaiRerankV2(TransformerReranker):
    """A v2 reranker.

    Example::

        reranker = MxbaiRerankV2("mixedbread-ai/mxbai-rerank-base-v2")
        reranker.rank("Who wrote 'To Kill a Mockingbird'?", documents, top_k=3)

    Args:
        model_name_or_path: Hub name or local directory (any Qwen2-style causal LM: this class
            is the explicit choice of the ``mxbai-v2`` family).
        device: ``"cuda"``, ``"cpu"``, ``"mps"``...; default: the best available.
        torch_dtype: Overrides the automatic choice (see the README, "dtype").
        max_length: Most tokens of query plus document (default 8192; ``None`` or ``0``: the
            model's whole window, 32k for the published models).
        tokenizer_kwargs: Passed to ``AutoTokenizer.from_pretrained``.
        disable_transformers_warnings: Set transformers' verbosity to errors only.
        estimated_max: For ``normalize=True``; default: the config marker's value, else the known
            model's (9.0 base, 12.0 large), else 12.0. ``0.0`` is honoured.
        max_batch_tokens: Padded tokens per forward pass (default: ``_registry.DEFAULT_MAX_BATCH_TOKENS``).
        backend: Engine backend (default ``"torch"``).
        **kwargs: Hub keywords go to config, model and tokenizer; the rest to
            ``AutoModelForCausalLM.from_pretrained``.
    """

    family_name: ClassVar[str | None] = FAMILY.name

    # Upstream's customisation points: a subclass that changes one changes the prompt.
    sep: ClassVar[str] = TEMPLATE.sep
    instruction_prompt: ClassVar[str] = TEMPLATE.instruction
    query_prompt: ClassVar[str] = TEMPLATE.query
    doc_prompt: ClassVar[str] = TEMPLATE.document
    task_prompt: ClassVar[str] = TEMPLATE.task
    chat_template: ClassVar[dict[str, str]] = {"prefix": TEMPLATE.prefix, "suffix": TEMPLATE.suffix}

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        max_length: int | None = FAMILY.default_max_length,
        tokenizer_kwargs: dict[str, Any] | None = None,
        disable_transformers_warnings: bool = False,
        estimated_max: float | None = None,
        max_batch_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        family = kwargs.pop("family", None)
        if family is not None and not isinstance(get_family(family), MxbaiV2Family):
            raise ValueError(f"MxbaiRerankV2 runs the {FAMILY.name} family (or one derived from it), not {family!r}")
        super().__init__(
            model_name_or_path,
            device=device,
            torch_dtype=torch_dtype,
            max_length=max_length,
            tokenizer_kwargs=tokenizer_kwargs,
            disable_transformers_warnings=disable_transformers_warnings,
            max_batch_tokens=max_batch_tokens,
            family=family,
            estimated_max=estimated_max,
            **kwargs,
        )
        encoder = self.engine.encoder
        assert isinstance(encoder, PromptPairEncoder)
        self._encoder = encoder
        self.model_max_length = encoder.model_max_length
        self.yes_loc, self.no_loc = encoder.positive_id, encoder.negative_id

    def _template_overrides(self) -> dict[str, Any]:
        """The prompt fields a subclass changed (the family's own template fills in the rest)."""
        cls = type(self)
        fields = {
            "sep": cls.sep,
            "instruction": cls.instruction_prompt,
            "query": cls.query_prompt,
            "document": cls.doc_prompt,
            "task": cls.task_prompt,
            "prefix": cls.chat_template.get("prefix", TEMPLATE.prefix),
            "suffix": cls.chat_template.get("suffix", TEMPLATE.suffix),
        }
        return {name: value for name, value in fields.items() if value != getattr(TEMPLATE, name)}

    # -- upstream's pre-tokenized template pieces ---------------------------------------
    @property
    def sep_inputs(self) -> list[int]:
        return list(self._encoder.sep_ids)

    @property
    def chat_template_prefix_inputs(self) -> list[int]:
        return list(self._encoder.prefix_ids)

    @property
    def task_prompt_inputs(self) -> list[int]:
        tail = self._encoder.tail_ids  # sep + task + suffix
        return tail[len(self._encoder.sep_ids) : len(tail) - len(self.chat_template_suffix_inputs)]

    @property
    def chat_template_suffix_inputs(self) -> list[int]:
        return self._encoder.tokenizers.ids([self._encoder.template.suffix])[0]

    @property
    def predefined_length(self) -> int:
        return self._encoder.fixed_length

    def concat_input_ids(self, input_ids: list[int]) -> list[int]:
        """``input_ids`` (query, sep, document) inside the chat template and task prompt."""
        return self._encoder.prefix_ids + list(input_ids) + self._encoder.tail_ids

    def prepare_inputs(self, queries: list[str], documents: list[str], *, instruction: str | None = None) -> Any:
        """Upstream's model inputs: ``input_ids`` and ``attention_mask``, left padded to a multiple of 8."""
        from transformers import BatchEncoding

        encoded = self.encode_pairs(queries, documents, instruction=instruction)
        width = -(-max(len(ids) for ids in encoded.input_ids) // 8) * 8
        pad = self.engine.pad_token_id
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, seq in enumerate(encoded.input_ids):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return BatchEncoding({"input_ids": ids, "attention_mask": mask})

    def normalize_scores(self, scores: Any) -> Any:
        """Raw scores -> (0, 1) with this model's ``estimated_max``."""
        return sigmoid_normalize(scores, estimated_max=self.estimated_max)
