# TODO(lead): temporary re-export while consumers move to mxbai_rerank._engine; remove before submitting.
from ._engine._loading import *  # noqa: F403
from ._engine._loading import ModelLoadError, read_config, resolve_device, resolve_dtype  # noqa: F401
