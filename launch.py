"""Start the VimoRAG browser app: ``python launch.py`` (127.0.0.1:7860 by default).

The Gradio front end lives in ``app/``; until it lands this entry point checks that the
embedded default is ready (motion corpus, shipped checkpoints) and says what works today.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python launch.py",
        description="Start the VimoRAG app on the embedded default (offline, CPU).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args(argv)

    try:
        from app.main import serve
    except ImportError:
        from backend.data.dataset import open_corpus
        from backend.manifest import verify

        corpus = open_corpus()
        problems = verify()
        print(f"Motion corpus ready at {corpus.root}.")
        print("Checkpoints: " + ("all match checkpoints/MANIFEST." if not problems else "; ".join(problems)))
        print("The browser app is not part of this version yet; the back end works today:\n"
              "  python -m backend --help")
        return 1
    return serve(host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    sys.exit(main())
