"""Train the text-motion evaluator contrastively on a corpus's train split (plus, for the
embedded corpus, the ``ood_judge`` half of the OOD motions, so it can judge OOD kinds; OOD
tables use the other half, and the generator never trains on either).

Each step takes a batch of distinct motions, one random caption of each and a random crop
(at most 196 frames, a multiple of 4, sometimes one unit shorter, as the protocol's test loader
does). Loss, on the Euclidean distances ``d[i, j]`` between text ``i`` and motion ``j``:

    cross-entropy over rows and over columns of ``-d / temperature``   (InfoNCE, both ways)
  + margin_weight * mean( d[i,i]^2 + relu(margin - d[i, i+1])^2 )      (Guo et al.'s loss, which
                                                                       fixes the scale of the space)

MiniLM is frozen, so caption embeddings are computed once. Resumable like the VQ-VAE trainer:
``out_dir/train_state.pt`` every ``ckpt_every`` steps (weights_only-loadable), final model in
``out_dir/model``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.checkpoints import save_pretrained_atomic
from backend.data.dataset import MotionCorpus, random_crop
from backend.evaluation.evaluator import EvaluatorConfig, TextMotionEvaluator
from motioncore.io import atomic_write


@dataclass
class EvaluatorTrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 1.0
    margin: float = 10.0
    margin_weight: float = 0.05
    max_frames: int = 196
    min_frames: int = 40
    unit: int = 4
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    threads: int = 2
    splits: tuple[str, ...] = ("train",)


def contrastive_loss(text: torch.Tensor, motion: torch.Tensor, cfg: EvaluatorTrainConfig):
    d = torch.cdist(text, motion)
    target = torch.arange(len(d))
    nce = F.cross_entropy(-d / cfg.temperature, target) + F.cross_entropy(-d.t() / cfg.temperature, target)
    pos = torch.diagonal(d)
    neg = torch.diagonal(torch.roll(d, 1, dims=1))
    margin = (pos.pow(2) + F.relu(cfg.margin - neg).pow(2)).mean()
    return nce + cfg.margin_weight * margin, d


def _batch(motions, caption_emb, caption_owner, cfg, step):
    rng = np.random.default_rng([cfg.seed, step])
    which = rng.choice(len(motions), size=min(cfg.batch_size, len(motions)), replace=False)
    crops = [random_crop(motions[i], rng, cfg.max_frames, cfg.unit) for i in which]
    caps = [int(rng.choice(caption_owner[i])) for i in which]
    lengths = torch.tensor([len(c) for c in crops])
    x = torch.zeros(len(crops), int(lengths.max()), crops[0].shape[1])
    for b, c in enumerate(crops):
        x[b, :len(c)] = torch.from_numpy(c)
    return caption_emb[caps], x, lengths


def _save_state(path: Path, model, opt, step):
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}
    atomic_write(path, lambda fh: torch.save(state, fh))


def train_evaluator(corpus: MotionCorpus, model_cfg: EvaluatorConfig, cfg: EvaluatorTrainConfig,
                    out_dir: Path, resume: bool = True, progress: bool = True) -> TextMotionEvaluator:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_config.json").write_text(json.dumps(
        {"model": asdict(model_cfg), "train": asdict(cfg), "data": str(corpus.root)}, indent=2))

    norm = corpus.normalizer
    motions, texts, owner = [], [], []
    items = {}
    for split in cfg.splits:
        items.update(corpus.load_features(split, min_frames=cfg.min_frames))
    for mid, feats in items.items():
        idx = []
        for cap in corpus.captions(mid):
            idx.append(len(texts))
            texts.append(cap.text)
        motions.append(norm.normalize(feats).astype(np.float32))
        owner.append(idx)
    model = TextMotionEvaluator(model_cfg).set_normalization(norm.mean, norm.std)
    print(f"Encoding {len(texts)} training captions with MiniLM (frozen) ...", flush=True)
    caption_emb = model.text_model.encode(texts)

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) *
                                              (0.1 if s >= 0.8 * cfg.steps else 1.0))
    state_path = out_dir / "train_state.pt"
    step = 0
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        for _ in range(step):
            sched.step()
        print(f"Resuming evaluator training at step {step}", flush=True)

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="evaluator", disable=not progress)
    with open(out_dir / "train_log.jsonl", "a") as log:
        while step < cfg.steps:
            emb, x, lengths = _batch(motions, caption_emb, owner, cfg, step)
            text, motion = model(emb, x, lengths)
            loss, d = contrastive_loss(text, motion, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                top1 = (d.argmin(dim=1) == torch.arange(len(d))).float().mean().item()
                row = {"step": step, "loss": loss.item(), "batch_top1": top1,
                       "pos_dist": torch.diagonal(d).mean().item(), "lr": sched.get_last_lr()[0]}
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}", top1=f"{top1:.2f}")
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                _save_state(state_path, model, opt, step)
    bar.close()
    model.eval()
    save_pretrained_atomic(model, out_dir / "model")
    return model
