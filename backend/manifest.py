"""``checkpoints/MANIFEST``: every shipped file with its sha256 and the command that made it.

One line per file, tab-separated: ``sha256  relative/path  command``. Recording a component
replaces the lines of its folder, so the manifest always matches what is on disk.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from backend.paths import checkpoints_dir


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(root: Path | None = None) -> list[tuple[str, str, str]]:
    path = (root or checkpoints_dir()) / "MANIFEST"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel, command = line.split("\t", 2)
            rows.append((digest, rel, command))
    return rows


def record(folder: Path, command: str, root: Path | None = None) -> None:
    """Replace the manifest entries under ``folder`` by its current files."""
    root = root or checkpoints_dir()
    prefix = folder.resolve().relative_to(root.resolve()).as_posix() + "/"
    rows = [r for r in read_manifest(root) if not r[1].startswith(prefix)]
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rows.append((sha256(f), f.resolve().relative_to(root.resolve()).as_posix(), command))
    rows.sort(key=lambda r: r[1])
    text = "# sha256\tpath (relative to checkpoints/)\tcommand that produced it\n"
    text += "".join(f"{d}\t{p}\t{c}\n" for d, p, c in rows)
    tmp = root / "MANIFEST.tmp"
    tmp.write_text(text)
    tmp.replace(root / "MANIFEST")


def verify(root: Path | None = None) -> list[str]:
    """Problems found: files listed but missing or with a different hash."""
    root = root or checkpoints_dir()
    problems = []
    for digest, rel, _ in read_manifest(root):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in MANIFEST but missing")
        elif sha256(path) != digest:
            problems.append(f"{rel}: sha256 differs from MANIFEST")
    return problems
