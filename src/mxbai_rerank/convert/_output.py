"""Atomic output folders: everything is written to a temporary sibling, then renamed into place."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ConversionError", "atomic_output_dir", "check_output_dir"]

logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A conversion that cannot be done as asked (wrong model family, an existing output...)."""


def check_output_dir(output: str | os.PathLike[str], overwrite: bool) -> Path:
    """The output folder, checked before anything is loaded or written.

    Raises :class:`ConversionError` when it exists (and ``overwrite`` is off), is a file, or
    its parent folder does not exist.
    """
    path = Path(os.path.expanduser(str(output))).absolute()
    if path.exists() and not path.is_dir():
        raise ConversionError(f"output {str(path)!r} exists and is a file, not a folder")
    if path.exists() and not overwrite:
        raise ConversionError(f"output folder {str(path)!r} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ConversionError(f"the parent folder of the output, {str(path.parent)!r}, does not exist")
    return path


@contextmanager
def atomic_output_dir(output: str | os.PathLike[str], overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``output`` to write into; on success it becomes ``output``.

    Invariant: ``output`` is either absent, its previous content, or the complete new content,
    never a partial write. On an error the temporary folder is removed and ``output`` is
    untouched. With ``overwrite`` an existing folder is moved aside, replaced, then deleted.
    """
    target = check_output_dir(output, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("wrote %s", target)
