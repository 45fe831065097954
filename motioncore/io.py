"""Writing files so that readers never see half of one: the content goes to a temporary file in
the same folder, is flushed to disk, and replaces the target in one ``os.replace``. When writing
fails, neither the target nor a temporary file is left behind. Every writer of the project goes
through ``atomic_write``."""
from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


def atomic_write(path, write: Callable[[object], None], what: str = "file") -> Path:
    """Write ``path`` through ``write(binary_file)``. Folder problems raise ``OSError`` (or a
    subclass) with a message naming the folder, any other OSError one naming ``path``; the
    written file is readable by all (0644)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {what} to {path}: it is a folder")
    if not folder.exists():
        raise FileNotFoundError(f"cannot write {what} to {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {what} to {path}: {folder} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {what} to {path}: folder {folder} is not "
                                   f"writable ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)                       # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and str(path) not in str(exc):   # say which file
            raise type(exc)(exc.errno, f"cannot write {what} to {path}: "
                                       f"{exc.strerror or exc}") from exc
        raise
    return path


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """For writers that need a file name (video encoders, savefig): yields a temporary path in
    the target's folder with the same suffix; it replaces ``path`` when the block succeeds and is
    removed when it fails. The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes, what: str = "file") -> Path:
    """``atomic_write`` of ``data``; the folder is created if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: fh.write(data), what)


def atomic_write_text(path, text: str, what: str = "file") -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path, obj, what: str = "file", **dumps) -> Path:
    return atomic_write_text(path, json.dumps(obj, **dumps), what)


def atomic_save_npy(path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, arr)
    return atomic_write_bytes(path, buf.getvalue(), "array")


def atomic_write_jsonl(path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


__all__ = ["atomic_output", "atomic_save_npy", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_jsonl", "atomic_write_text"]
