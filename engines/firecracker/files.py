"""File operations of the Firecracker driver: copy-on-write copies, links, JSON records.

Whatever is written is written whole or not at all (a temporary name, then a
rename): a step cut short and retried must never take half a file for a whole one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

PARTIAL = ".partial"


def partial_of(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def clone_file(src: Path, dst: Path) -> None:
    """`dst` a copy of `src`: a reflink (constant time, shares blocks until written) where
    the filesystem offers one (XFS, btrfs), else a sparse copy. coreutils' cp does both."""
    partial = partial_of(dst)
    result = subprocess.run(
        ["cp", "--reflink=auto", "--sparse=always", "--", str(src), str(partial)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OSError(f"copying {src} to {dst} failed: {result.stderr.strip()}")
    os.replace(partial, dst)


def grow_file(path: Path, size: int) -> None:
    """Make the file `size` bytes long if it is shorter (sparse: no blocks written)."""
    if path.stat().st_size < size:
        os.truncate(path, size)


def hard_link(src: Path, dst: Path) -> None:
    """`dst` the very same file as `src` (writes through either are one file's)."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise OSError(f"{src} and {dst} are on different filesystems: cannot hard-link them") from exc
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` holding `src`'s bytes: a hard link where possible, a copy across filesystems
    (for files nobody writes: kernels, initrds)."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM):
            raise
        shutil.copyfile(src, dst)


def write_json(path: Path, data: dict) -> None:
    partial = partial_of(path)
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


def read_json(path: Path) -> dict | None:
    """The record at `path`, or None when there is none (or only a torn one)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_tree(path: Path) -> None:
    """Remove a directory (or a file) and everything under it; a missing one is fine.
    Symlinks inside are removed, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
