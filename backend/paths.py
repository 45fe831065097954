"""Where things live. Everything is relative to the repository unless the user says otherwise.

- ``VIMORAG_DATA``: folder for built data (default ``<repo>/data``, git-ignored).
- ``VIMORAG_CHECKPOINTS``: folder of trained weights (default ``<repo>/checkpoints``).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_home() -> Path:
    return Path(os.environ.get("VIMORAG_DATA", REPO_ROOT / "data"))


def checkpoints_dir() -> Path:
    return Path(os.environ.get("VIMORAG_CHECKPOINTS", REPO_ROOT / "checkpoints"))


def embedded_corpus_dir() -> Path:
    return data_home() / "embedded"
