"""Learning curves of a training run, drawn from its ``train_log.jsonl`` into one PNG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from motioncore.io import atomic_output


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows) of a JSON-lines log; validation rows have kind "val"."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") != "val"], [r for r in rows if r.get("kind") == "val"]


def _save(fig, out: str | Path, dpi: int = 90) -> Path:
    """Lay out ``fig``, write it to ``out`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out


def plot_vqvae_curves(log: str | Path, out: str | Path) -> Path:
    """Train / validation reconstruction loss, root loss and codebook usage against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_log(log)
    if not train:
        raise ValueError(f"{log} has no training rows")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    ax1.plot(steps, [r["recon"] for r in train], label="train reconstruction (SmoothL1)")
    if "root" in train[0]:
        ax1.plot(steps, [r["root"] for r in train], label="train root terms", alpha=0.7)
    if train[0].get("joint_m"):
        ax1.plot(steps, [r["joint_m"] for r in train], label="train root-aligned joint error (m)")
    if val:
        ax1.plot([r["step"] for r in val], [r["val_recon"] for r in val], "o-",
                 label="validation reconstruction")
        ood = [r for r in val if "val_ood_recon" in r]
        if ood:
            ax1.plot([r["step"] for r in ood], [r["val_ood_recon"] for r in ood], "s-",
                     label="OOD-kind validation reconstruction")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("VQ-VAE loss (normalised features)")
    ax1.legend()
    ax2.plot(steps, [r["perplexity"] for r in train], label="batch perplexity")
    ax2.set_xlabel("step")
    ax2.set_ylabel("perplexity")
    if val:
        ax3 = ax2.twinx()
        ax3.plot([r["step"] for r in val], [100 * r["val_codes_used"] for r in val], "o-",
                 color="tab:red", label="validation codes used (%)")
        ood = [r for r in val if "val_ood_codes_used" in r]
        if ood:
            ax3.plot([r["step"] for r in ood], [100 * r["val_ood_codes_used"] for r in ood], "s-",
                     color="tab:purple", label="OOD-kind validation codes used (%)")
        ax3.set_ylabel("codes used on validation (%)")
        ax3.set_ylim(0, 100)
        ax3.legend(loc="lower right")
    ax2.set_title("codebook usage")
    ax2.legend(loc="upper left")
    return _save(fig, out)


def plot_checker_curves(log: str | Path, out: str | Path, title: str = "instruction checker") -> Path:
    """Training loss and the share of what held-out real prompts ask that the checker reads right
    (overall and per attribute) against steps, from ``train_checker``'s log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_followed" in r]
    if not train:
        raise ValueError(f"{log} has no training rows")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train])
    ax1.set_xlabel("step")
    ax1.set_title(f"{title}: training loss (sum of heads)")
    if val:
        steps = [r["step"] for r in val]
        ax2.plot(steps, [100 * r["val_followed"] for r in val], "o-", lw=2, label="all attributes")
        for attr in val[0]["val"]:
            ax2.plot(steps, [100 * (r["val"][attr] or 0) for r in val], alpha=0.6, label=attr)
        ax2.set_ylim(0, 100)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("step")
    ax2.set_title("read right on held-out real motions (%)")
    return _save(fig, out)


def plot_reader_curves(log: str | Path, out: str | Path) -> Path:
    """The pose reader's training loss and its train/validation cross-entropy and top-1 code
    accuracy against steps (``train_pose_reader``'s log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_log(log)
    if not train:
        raise ValueError(f"{log} has no training rows")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.4, label="batch")
    if val:
        steps = [r["step"] for r in val]
        ax1.plot(steps, [r["train_loss"] for r in val], "o-", label="train (sample)")
        ax1.plot(steps, [r["val_loss"] for r in val], "o-", lw=2, label="held-out videos")
        ax2.plot(steps, [100 * r["train_acc"] for r in val], "o-", label="train (sample)")
        ax2.plot(steps, [100 * r["val_acc"] for r in val], "o-", lw=2, label="held-out videos")
        ax2.legend()
    ax1.set_xlabel("step")
    ax1.set_title("pose reader: cross-entropy per token")
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_title("code read exactly (%)")
    return _save(fig, out)


def plot_llm_curves(log: str | Path, out: str | Path, title: str = "SFT") -> Path:
    """Motion-LLM curves from its ``log.jsonl``: training loss (and its running mean), validation
    loss; for McDPO rows, the reward margin and preference accuracy on a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_log(log)
    if not train:
        raise ValueError(f"{log} has no training rows")
    dpo = "margin" in train[0]
    fig, axes = plt.subplots(1, 2 if dpo else 1, figsize=(11 if dpo else 6, 4), squeeze=False)
    ax = axes[0, 0]
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train])
    ax.plot(steps, loss, alpha=0.35, label="training loss (one batch)")
    k = min(10, len(loss))
    ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"running mean of {k}")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss")
        for key, label in (("val_caption_loss", "validation: captions + rank-1 videos"),
                           ("val_video_loss", "validation: held-out videos, no words")):
            part = [r for r in val if key in r]
            if part:
                ax.plot([r["step"] for r in part], [r[key] for r in part], "s--", label=label)
    ax.set_xlabel("step")
    ax.set_title(f"{title}: loss")
    ax.legend()
    if dpo:
        ax2 = axes[0, 1]
        ax2.plot(steps, [r["margin"] for r in train], label="reward margin (chosen - rejected)")
        ax2.set_xlabel("step")
        ax2.legend(loc="upper left")
        if "accuracy" in train[0]:
            ax3 = ax2.twinx()
            ax3.plot(steps, [r["accuracy"] for r in train], color="tab:red", alpha=0.6,
                     label="preference accuracy")
            ax3.set_ylim(0, 1)
            ax3.legend(loc="lower right")
        ax2.set_title(f"{title}: rewards")
    return _save(fig, out, dpi=110)


def plot_appearance_curves(log: str | Path, out: str | Path) -> Path:
    """``train appearance`` curves from its ``log.jsonl`` (last run): the object and fused InfoNCE
    on described captions, and the learned appearance scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    run: list[dict] = []
    for r in rows:
        if r.get("stage") == "appearance":
            run = [] if r["step"] == 0 else run
            run.append(r)
    if not run:
        raise ValueError(f"{log} has no appearance rows")
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in run]
    ax.plot(steps, [r["object"] for r in run], label="object score InfoNCE")
    ax.plot(steps, [r["fused"] for r in run], label="fused score InfoNCE")
    ax.set_xlabel("step")
    ax.legend(loc="upper left")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["scale"] for r in run], color="tab:red", label="appearance scale")
    ax2.legend(loc="upper right")
    ax.set_title("appearance words (channels and router frozen; one batch)")
    return _save(fig, out, dpi=110)


def plot_retriever_curves(log: str | Path, out: str | Path) -> Path:
    """Gemini-MVR curves from its ``log.jsonl``: stage 1's InfoNCE of each channel, stage 2's
    fused loss and the router's mean action weight (the last run in the log of each stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]

    def last_run(stage: int) -> list[dict]:
        run: list[dict] = []
        for r in rows:
            if r.get("stage") == stage:
                run = [] if r["step"] == 0 else run
                run.append(r)
        return run

    one, two = last_run(1), last_run(2)
    if not one:
        raise ValueError(f"{log} has no stage-1 rows")
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("action", "action channel (keypoints)"), ("object", "object channel (I3D)")):
        ax.plot([r["step"] for r in one], [r[key] for r in one], label=label)
    ax.set_xlabel("step")
    ax.set_title("stage 1: InfoNCE per channel (one batch)")
    ax.legend()
    if two:
        ax2 = axes[0, 1]
        ax2.plot([r["step"] for r in two], [r["loss"] for r in two], label="fused InfoNCE")
        ax2.set_xlabel("step")
        ax2.legend(loc="upper left")
        ax3 = ax2.twinx()
        ax3.plot([r["step"] for r in two], [r["w_action"] for r in two], color="tab:red",
                 label="mean action weight")
        ax3.set_ylim(0, 1)
        ax3.legend(loc="lower right")
        ax2.set_title("stage 2: router (channels frozen)")
    return _save(fig, out, dpi=110)
