"""The folder format of every trained component: ``config.json`` (its config dataclass) +
``model.safetensors`` (its tensors). Shared by ``save_pretrained`` / ``from_pretrained``."""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_folder(directory, state_dict: dict, config, dtype: torch.dtype | None = None,
                keep_float32: tuple[str, ...] = ()) -> Path:
    """Write the tensors (floating ones cast to ``dtype`` unless named in ``keep_float32``) and
    the config."""
    from safetensors.torch import save_file

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
    import os
    import shutil

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
