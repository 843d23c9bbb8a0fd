"""Rerankers for RAG frameworks, each an optional extra:

* :mod:`mxbai_rerank.integrations.langchain` - ``MxbaiRerankCompressor``, a LangChain document
  compressor (``pip install 'mxbai-rerank[langchain]'``);
* :mod:`mxbai_rerank.integrations.llamaindex` - ``MxbaiRerankPostprocessor``, a LlamaIndex node
  postprocessor (``pip install 'mxbai-rerank[llamaindex]'``);
* :mod:`mxbai_rerank.integrations.haystack` - ``MxbaiRerankRanker``, a Haystack component
  (``pip install 'mxbai-rerank[haystack]'``).

Each ranks with a model in this process (``model=`` a name, path or loaded reranker) or with a
server speaking the Mixedbread rerank API (``base_url=``, e.g. ``mxbai-rerank serve``).
Importing this package imports no framework.
"""

from __future__ import annotations

from ._client import RerankServerError

__all__ = ["RerankServerError"]
