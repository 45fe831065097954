"""Where trained components live and how they are written, read and shipped.

- Locations: ``VIMORAG_DATA`` is the folder for built data (default ``<repo>/data``, git-ignored);
  ``VIMORAG_CHECKPOINTS`` the folder of trained weights (default ``<repo>/checkpoints``).
- The folder format of every trained component: ``config.json`` (its config dataclass) +
  ``model.safetensors`` (its tensors), shared by every ``save_pretrained`` / ``from_pretrained``.
- ``checkpoints/MANIFEST``: every shipped file with its sha256 and the command that made it, one
  tab-separated line per file (``sha256  relative/path  command``). Recording a component replaces
  the lines of its folder, so the manifest always matches what is on disk.
- ``ship``: the one way a command puts a trained component into ``checkpoints/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path


from motioncore.io import atomic_write_bytes, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_home() -> Path:
    return Path(os.environ.get("VIMORAG_DATA", REPO_ROOT / "data"))


def checkpoints_dir() -> Path:
    return Path(os.environ.get("VIMORAG_CHECKPOINTS", REPO_ROOT / "checkpoints"))


def embedded_corpus_dir() -> Path:
    return data_home() / "embedded"


# ---------------------------------------------------------------- folder format
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_folder(directory, state_dict: dict, config, dtype: torch.dtype | None = None,
                keep_float32: tuple[str, ...] = ()) -> Path:
    """Write the tensors (floating ones cast to ``dtype`` unless named in ``keep_float32``) and
    the config."""
    from safetensors.torch import save_file   # torch loads with the first model, not with --help

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point() and k not in keep_float32:
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    save_file(tensors, str(d / WEIGHTS_NAME), metadata={"format": "pt"})
    (d / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
    return d


def save_pretrained_atomic(model, dest) -> Path:
    """``model.save_pretrained`` into ``dest`` as one switch: written beside it, then renamed,
    so ``dest`` is always either the old complete folder or the new one."""
    dest = Path(dest)
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def load_folder(directory, config_cls, kind: str):
    """(config, float32 state dict) from a folder written by ``save_folder``; a clear
    FileNotFoundError names a missing file."""
    from safetensors.torch import load_file

    d = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found: not a {kind} directory written by "
                                    "save_pretrained()")
    raw = json.loads((d / CONFIG_NAME).read_text())
    known = {f.name for f in fields(config_cls)}
    config = config_cls(**{k: v for k, v in raw.items() if k in known})
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(d / WEIGHTS_NAME)).items()}
    return config, state


# -------------------------------------------------------------------- MANIFEST
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
    atomic_write_text(root / "MANIFEST", text, "MANIFEST")


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


# ------------------------------------------------------------------------ shipping
def command_line() -> str:
    """The command being run, as the MANIFEST records it."""
    return "python -m backend " + shlex.join(sys.argv[1:])


def ship(name: str, model=None, *, dtype: torch.dtype | None = None, files: tuple[Path, ...] = (),
         command: str | None = None) -> Path:
    """Put a trained component into ``checkpoints/NAME`` and record it in the MANIFEST with the
    command that made it (default: this process's command line). ``model`` is written with its
    ``save_pretrained`` (``dtype`` where it takes one), ``files`` are copied in; with neither, the
    folder is recorded as it already is (a database a command wrote in place)."""
    target = checkpoints_dir() / name
    if model is not None:
        if dtype is None:
            model.save_pretrained(target)
        else:
            model.save_pretrained(target, dtype=dtype)
    if files:
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            atomic_write_bytes(target / Path(f).name, Path(f).read_bytes())
    record(target, command or command_line())
    print(f"Shipped {target} and recorded it in {checkpoints_dir() / 'MANIFEST'}")
    return target
