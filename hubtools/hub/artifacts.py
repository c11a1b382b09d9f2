"""Artifact folders are written whole or not at all.

Every capability writes its artifact (config, safetensors, README.md card) through
:func:`atomic_dir`: the files go to a hidden temporary folder beside the final path,
on the same filesystem, and the folder is renamed into place only once the block
finished without an exception. A crash or an error therefore never leaves a partly
written artifact, and a previous artifact at the same path stays untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import RepoCard

from hubtools.errors import ArtifactError

CARD_FILENAME = "README.md"


def _default_dir_mode() -> int:
    # mkdtemp creates 0700 folders; an artifact should get the mode mkdir would give it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextmanager
def atomic_dir(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final_path`` when the block succeeds.

    - The temporary folder is a hidden sibling of ``final_path`` (same filesystem, so
      the final step is a rename, not a copy); missing parent folders are created.
    - On success an existing folder at ``final_path`` is moved aside, the new folder
      is renamed into place, and the old one is deleted. If the rename fails the old
      folder is moved back.
    - On any exception (``KeyboardInterrupt`` included) the temporary folder is
      removed and the exception propagates; ``final_path`` is not touched.

    Raises:
        ArtifactError: ``final_path`` exists and is not a folder.
    """
    final = Path(final_path).absolute()
    if final.exists() and not final.is_dir():
        raise ArtifactError(f"{final}: exists and is not a folder; refusing to replace it with an artifact")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        tmp.chmod(_default_dir_mode())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if not tmp.is_dir():
        raise ArtifactError(f"{tmp}: the temporary artifact folder disappeared before it was complete")
    backup = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    had_old = final.exists() or final.is_symlink()
    if had_old:
        os.rename(final, backup)
    try:
        os.rename(tmp, final)
    except BaseException:
        if had_old:
            os.rename(backup, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if had_old:
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink()


def save_card(folder: str | os.PathLike[str], card: RepoCard) -> Path:
    """Write ``card`` as the folder's ``README.md`` (UTF-8, line endings kept) and return its path."""
    path = Path(folder) / CARD_FILENAME
    card.save(path)
    return path
