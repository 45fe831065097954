"""Train the motion VQ-VAE (T2M-GPT recipe) on z-normalised motion features.

Loss = SmoothL1(recon, x) over all dims
     + pos_weight * SmoothL1 over the root-relative joint positions x[..., 4:4+(J-1)*3]
       (T2M-GPT calls this the "vel" loss)
     + commit_weight * commitment loss.
AdamW(betas 0.9, 0.99), linear warmup then step decay by `gamma` at `lr_milestones`.

Resumable: `out_dir/train_state.pt` (weights_only-loadable) is written atomically every
`ckpt_every` steps and at the end; the final model goes to `out_dir/model`.
Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.models.vqvae import MotionVQVAE, VQVAEConfig


@dataclass
class VQTrainConfig:
    steps: int = 100_000
    batch_size: int = 64
    window: int = 64  # frames per training crop (multiple of the downsampling factor)
    lr: float = 2e-4
    warmup_steps: int = 1000
    lr_milestones: tuple[int, ...] | None = None  # None -> (2/3 of steps,)
    gamma: float = 0.05  # lr multiplier at each milestone
    weight_decay: float = 0.0
    commit_weight: float = 0.02
    pos_weight: float = 0.5
    seed: int = 123
    log_every: int = 100
    ckpt_every: int = 2000
    threads: int = 2


def lr_at(step: int, cfg: VQTrainConfig) -> float:
    """Learning rate for 0-based `step`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    milestones = cfg.lr_milestones if cfg.lr_milestones is not None else (2 * cfg.steps // 3,)
    return cfg.lr * cfg.gamma ** sum(step >= m for m in milestones)


def position_slice(input_dim: int) -> slice:
    """Root-relative joint positions in HumanML3D-style features (263 -> 22 joints, 251 -> 21)."""
    joints = (input_dim - 11) // 12 + 1
    return slice(4, 4 + (joints - 1) * 3)


def sample_batch(motions, weights, cfg: VQTrainConfig, step: int) -> np.ndarray:
    """Random windows; a motion is picked with probability proportional to its number of windows."""
    rng = np.random.default_rng([cfg.seed, step])
    which = rng.choice(len(motions), size=cfg.batch_size, p=weights)
    out = np.empty((cfg.batch_size, cfg.window, motions[0].shape[1]), dtype=np.float32)
    for b, i in enumerate(which):
        start = rng.integers(0, len(motions[i]) - cfg.window + 1)
        out[b] = motions[i][start : start + cfg.window]
    return out


def _save_state(path: Path, model: MotionVQVAE, opt, step: int):
    q = model.quantizer
    state = {
        "model": model.state_dict(),
        "ema": {"code_sum": q.code_sum, "code_count": q.code_count, "initialised": int(q.initialised)},
        "optimizer": opt.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, model: MotionVQVAE, opt) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    q = model.quantizer
    q.code_sum.copy_(state["ema"]["code_sum"])
    q.code_count.copy_(state["ema"]["code_count"])
    q.initialised = bool(state["ema"]["initialised"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _save_model_atomic(model: MotionVQVAE, dest: Path):
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def train_vqvae(motions, model_cfg: VQVAEConfig, train_cfg: VQTrainConfig, out_dir, resume=True) -> MotionVQVAE:
    """Train on a list of z-normalised (T_i, D) float32 arrays; returns the model in eval mode."""
    cfg = train_cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    if cfg.window % model_cfg.downsample:
        raise ValueError(f"window={cfg.window} must be a multiple of {model_cfg.downsample}")

    motions = [np.asarray(m, dtype=np.float32) for m in motions if len(m) >= cfg.window]
    if not motions:
        raise ValueError(f"no motion has at least window={cfg.window} frames")
    if motions[0].shape[1] != model_cfg.input_dim:
        raise ValueError(f"motions have {motions[0].shape[1]} features, model expects {model_cfg.input_dim}")
    weights = np.array([len(m) - cfg.window + 1 for m in motions], dtype=np.float64)
    weights /= weights.sum()

    torch.manual_seed(cfg.seed)
    model = MotionVQVAE(model_cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    state_path, log_path = out_dir / "train_state.pt", out_dir / "train_log.jsonl"
    start = 0
    if resume and state_path.exists():
        start = _load_state(state_path, model, opt)
        print(f"resuming from {state_path} at step {start}")
    elif log_path.exists():
        log_path.unlink()  # fresh run: don't mix logs

    pos = position_slice(model_cfg.input_dim)
    sums, n_avg, t0 = {}, 0, time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="vqvae", dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.from_numpy(sample_batch(motions, weights, cfg, step))

        recon, commit, ppl = model(x)
        loss_recon = F.smooth_l1_loss(recon, x)
        loss_pos = F.smooth_l1_loss(recon[..., pos], x[..., pos])
        loss = loss_recon + cfg.pos_weight * loss_pos + cfg.commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        for k, v in (("loss", loss), ("recon", loss_recon), ("pos", loss_pos), ("commit", commit), ("perplexity", ppl)):
            sums[k] = sums.get(k, 0.0) + v.item()
        n_avg += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rec = {"step": done, "lr": lr, **{k: v / n_avg for k, v in sums.items()},
                   "sec_per_step": (time.time() - t0) / n_avg}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}", ppl=f"{rec['perplexity']:.1f}")
            sums, n_avg, t0 = {}, 0, time.time()
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _save_state(state_path, model, opt, done)
    bar.close()

    model.eval()
    _save_model_atomic(model, out_dir / "model")
    (out_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return model
