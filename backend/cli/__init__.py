"""``python -m backend <command>``: the one command-line entry of VimoRAG's back end.

One module per command group, each with an ``add(sub)`` that adds its parsers:
``data`` (corpus), ``videos`` (video database, ``index``, ``retrieve``), ``train`` (every trained
component), ``evaluate`` (``eval``: every table), ``bench`` (speed), ``motion`` (``generate``,
``export``, ``body``); ``common`` holds what several share. A command's work is imported inside its
function, on purpose: ``--help`` and a mistyped option answer at once instead of after loading
torch, transformers and OpenCV. Every ``eval``/``bench`` command accepts ``--json`` and then prints
one JSON object (the figures) as its last line.
"""
from __future__ import annotations

import argparse
import sys

from backend.cli import bench, data, evaluate, motion, train, videos
from backend.data.dataset import CorpusError
from backend.retrieval.videos.database import DatabaseError
from motioncore.features import MotionFormatError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="VimoRAG back end: data, training, evaluation. Works offline; the embedded "
                    "corpus is built on first use. Add --help after any command for its options.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, videos, train, evaluate, bench, motion):
        group.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CorpusError, DatabaseError, MotionFormatError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
