"""``python -m backend data``: build the motion corpus (and ship its normaliser)."""
from __future__ import annotations

import json
from pathlib import Path

from backend.checkpoints import ship
from backend.cli.common import command_group


def cmd_data_build(args) -> int:
    from backend.data.corpus import CorpusConfig, build_corpus, corpus_is_built
    from backend.checkpoints import embedded_corpus_dir

    out = Path(args.out) if args.out else embedded_corpus_dir()
    if corpus_is_built(out) and not args.force:
        print(f"The corpus is already built at {out} (use --force to rebuild).")
        if args.ship:
            ship_normalizer(out)
        return 0
    if args.extra < 0:
        raise SystemExit(f"--extra must be >= 0, got {args.extra}")
    cfg = CorpusConfig(n_in_dist=args.n_in_dist, n_ood=args.n_ood, seed=args.seed, n_extra=args.extra)
    build_corpus(out, cfg)
    meta = json.loads((out / "BUILD.json").read_text())
    print(f"Wrote {sum(meta['counts'].values())} motions to {out}: " +
          ", ".join(f"{k} {v}" for k, v in meta["counts"].items()))
    if args.ship:
        ship_normalizer(out)
    return 0


def ship_normalizer(corpus_dir: Path) -> None:
    """Ship the corpus's Mean/Std (what the VQ-VAE's inputs are normalised with), so generation
    never needs the corpus."""
    ship("normalizer", files=(corpus_dir / "Mean.npy", corpus_dir / "Std.npy"))


def add(sub) -> None:
    """Add these commands to the top-level parser."""
    dsub = command_group(sub, "data", "build or inspect motion datasets")
    b = dsub.add_parser(
        "build", help="build the embedded mocap corpus (HumanML3D layout)",
        description="Retarget pybullet's DeepMimic mocap clips onto the SMPL skeleton, augment "
                    "them into captioned motions and write a HumanML3D-layout folder with "
                    "train/val/test/ood splits. Deterministic for a given seed.")
    b.add_argument("--out", help="output folder (default: $VIMORAG_DATA/embedded, i.e. data/embedded)")
    b.add_argument("--seed", type=int, default=2025)
    b.add_argument("--n-in-dist", type=int, default=3300, help="motions for train/val/test")
    b.add_argument("--n-ood", type=int, default=500, help="motions with out-of-distribution kinds")
    b.add_argument("--extra", type=int, default=0,
                   help="also write a train_extra split of this many more in-distribution motions "
                        "(train phrasings; only `train sft --extra-train` reads it; every other split "
                        "and the normaliser stay as without it)")
    b.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    b.add_argument("--ship", action="store_true",
                   help="also copy Mean/Std to checkpoints/normalizer (+ MANIFEST)")
    b.set_defaults(func=cmd_data_build)
