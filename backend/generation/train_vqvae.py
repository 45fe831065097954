"""Train the motion VQ-VAE (T2M-GPT recipe) on z-normalised motion features.

Loss = SmoothL1(recon, x) over all dims
     + pos_weight * SmoothL1 over the root-relative joint positions x[..., 4:4+(J-1)*3]
       (T2M-GPT calls this the "vel" loss)
     + root_weight * SmoothL1 over the root terms x[..., 0:4] (turn, velocity, height: one
       dimension each among 263, yet their errors integrate into the whole trajectory and
       heading, which dominates MPJPE on long motions)
     + joint_weight * mean distance (metres) between the root-aligned joint positions recovered
       from the reconstruction and from the input, with the heading integrated over the window
       (what root-aligned MPJPE measures: a small error of the turn velocity rotates the whole
       body a little more every frame; needs the dataset Mean/Std to undo the normalisation)
     + commit_weight * commitment loss.
AdamW(betas 0.9, 0.99), linear warmup, then either step decay by `gamma` at `lr_milestones`
(T2M-GPT) or a cosine decay to `gamma * lr` (`schedule="cosine"`).

With validation motions, every `val_every` steps the reconstruction loss on fixed validation
windows and the codebook usage are logged (`kind: "val"` rows of the log) for the learning
curves.

Resumable: `out_dir/train_state.pt` (weights_only-loadable) is written atomically every
`ckpt_every` steps and at the end; the final model goes to `out_dir/model`.
Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.checkpoints import save_pretrained_atomic
from backend.generation.vqvae import MotionVQVAE, VQVAEConfig
from motioncore.io import atomic_write


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
    root_weight: float = 0.0
    joint_weight: float = 0.0
    schedule: str = "step"  # "step" (T2M-GPT) or "cosine"
    val_every: int = 500
    seed: int = 123
    log_every: int = 100
    ckpt_every: int = 2000
    threads: int = 2
    device: str = "cpu"  # "cuda" trains on a GPU (the same batches, far faster)
    freeze_codebook: bool = False  # keep the codes (and their meaning to a trained motion LLM)
    time_budget_s: float = 0.0  # > 0: after timing 200 steps, lower `steps` to end within this


def lr_at(step: int, cfg: VQTrainConfig) -> float:
    """Learning rate for 0-based `step`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "cosine":
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return float(cfg.lr * (cfg.gamma + (1 - cfg.gamma) * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))))
    milestones = cfg.lr_milestones if cfg.lr_milestones is not None else (2 * cfg.steps // 3,)
    return cfg.lr * cfg.gamma ** sum(step >= m for m in milestones)


def position_slice(input_dim: int) -> slice:
    """Root-relative joint positions in HumanML3D-style features (263 -> 22 joints, 251 -> 21)."""
    joints = (input_dim - 11) // 12 + 1
    return slice(4, 4 + (joints - 1) * 3)


def aligned_joints(features: torch.Tensor) -> torch.Tensor:
    """Un-normalised HumanML3D features (B, T, D) -> joints 1..J-1 relative to the root (B, T,
    J-1, 3), turned by the heading integrated from the window's first frame (torch version of
    ``motioncore.features.features_to_joints`` minus the root position)."""
    B, T, D = features.shape
    pos = position_slice(D)
    angle = 2.0 * torch.cumsum(F.pad(features[:, :-1, 0], (1, 0)), dim=1)
    c, s = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    ric = features[..., pos].reshape(B, T, -1, 3)
    x, y, z = ric[..., 0], ric[..., 1], ric[..., 2]
    return torch.stack([x * c - z * s, y - features[..., 3:4], x * s + z * c], dim=-1)


def window_starts(lengths: np.ndarray, weights, cfg: VQTrainConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(motion index, first frame) of each window of the batch at ``step``: a motion is picked
    with probability ``weights`` (by default proportional to its number of windows)."""
    rng = np.random.default_rng([cfg.seed, step])
    which = rng.choice(len(lengths), size=cfg.batch_size, p=weights)
    starts = np.array([rng.integers(0, lengths[i] - cfg.window + 1) for i in which], dtype=np.int64)
    return which, starts


class WindowSampler:
    """The batch of windows at ``step`` (a pure function of seed and step), with the motions held
    as one tensor on the training device, so a batch is one gather there."""

    def __init__(self, motions, weights, cfg: VQTrainConfig):
        self.cfg, self.weights = cfg, weights
        self.lengths = np.array([len(m) for m in motions])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.frames = torch.from_numpy(np.concatenate(motions).astype(np.float32)).to(cfg.device)
        self.steps = torch.arange(cfg.window, device=cfg.device)

    def __call__(self, step: int) -> torch.Tensor:
        which, starts = window_starts(self.lengths, self.weights, self.cfg, step)
        first = torch.from_numpy(self.offsets[which] + starts).to(self.cfg.device)
        return self.frames[first[:, None] + self.steps[None]]


def _fit_budget(cfg: VQTrainConfig, step: int, sec_per_step: float, elapsed: float, bar) -> None:
    """Lower ``cfg.steps`` so that training ends within ``cfg.time_budget_s`` (5 % margin for
    validation and checkpoints); the schedule then decays over the steps that fit."""
    fit = step + int(max(0.0, cfg.time_budget_s - elapsed) / sec_per_step * 0.95)
    if fit < cfg.steps:
        print(f"time budget {cfg.time_budget_s:.0f} s at {sec_per_step * 1000:.1f} ms/step: "
              f"training for {fit} steps instead of {cfg.steps}")
        cfg.steps = max(step, fit)
        bar.total = cfg.steps


def _save_state(path: Path, model: MotionVQVAE, opt, step: int):
    q = model.quantizer
    state = {
        "model": model.state_dict(),
        "ema": {"code_sum": q.code_sum, "code_count": q.code_count, "initialised": int(q.initialised)},
        "optimizer": opt.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda fh: torch.save(state, fh))


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


def validation_windows(motions, window: int, per_motion: int = 2, seed: int = 0) -> np.ndarray:
    """Fixed windows (N, window, D) from validation motions (the same at every evaluation)."""
    rng = np.random.default_rng(seed)
    out = []
    for m in motions:
        if len(m) < window:
            continue
        for _ in range(per_motion):
            start = int(rng.integers(0, len(m) - window + 1))
            out.append(np.asarray(m[start:start + window], dtype=np.float32))
    return np.stack(out) if out else np.zeros((0, window, 0), np.float32)


@torch.no_grad()
def validate(model: MotionVQVAE, windows: np.ndarray, batch: int = 128) -> dict:
    """Reconstruction SmoothL1 on validation windows and the share of codes they use."""
    was_training = model.training
    model.eval()
    device = model.quantizer.codebook.device
    losses, hist = [], np.zeros(model.config.nb_code, np.int64)
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(windows[i:i + batch]).to(device)
        codes = model.encode(x)
        recon = model.decode(codes)
        losses.append(F.smooth_l1_loss(recon, x, reduction="sum").item())
        np.add.at(hist, codes.reshape(-1).cpu().numpy(), 1)
    model.train(was_training)
    return {"val_recon": sum(losses) / windows.size, "val_codes_used": float((hist > 0).mean())}


def train_vqvae(motions, model_cfg: VQVAEConfig, train_cfg: VQTrainConfig, out_dir, resume=True,
                val_motions=None, init: MotionVQVAE | None = None, stats=None,
                boost=None, val_ood_motions=None) -> MotionVQVAE:
    """Train on a list of z-normalised (T_i, D) float32 arrays; returns the model (on the CPU)
    in eval mode. ``val_motions`` (same form) adds validation rows to the log every
    ``val_every`` steps; ``init``: a trained model to start from (fine-tuning) when no run is
    resumed; ``stats``: the (mean, std) the motions were normalised with (needed by
    ``joint_weight``); ``boost``: per-motion multipliers of how often a motion is drawn (e.g.
    more windows of the rare OOD kinds); ``val_ood_motions``: a second validation set (motions
    of kinds the first lacks), logged as ``val_ood_recon`` / ``val_ood_codes_used`` in the same
    rows. ``freeze_codebook`` needs ``init``."""
    cfg = train_cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    if cfg.window % model_cfg.downsample:
        raise ValueError(f"window={cfg.window} must be a multiple of {model_cfg.downsample}")

    boost = np.ones(len(motions)) if boost is None else np.asarray(boost, dtype=np.float64)
    if len(boost) != len(motions):
        raise ValueError(f"boost has {len(boost)} entries for {len(motions)} motions")
    keep = [i for i, m in enumerate(motions) if len(m) >= cfg.window]
    motions = [np.asarray(motions[i], dtype=np.float32) for i in keep]
    if not motions:
        raise ValueError(f"no motion has at least window={cfg.window} frames")
    if motions[0].shape[1] != model_cfg.input_dim:
        raise ValueError(f"motions have {motions[0].shape[1]} features, model expects {model_cfg.input_dim}")
    if cfg.freeze_codebook and init is None:
        raise ValueError("freeze_codebook keeps a trained codebook: give init")
    weights = np.array([len(m) - cfg.window + 1 for m in motions], dtype=np.float64) * boost[keep]
    weights /= weights.sum()

    torch.manual_seed(cfg.seed)
    model = MotionVQVAE(model_cfg).train()
    if init is not None:
        model.load_state_dict(init.state_dict())
        latents_per_batch = cfg.batch_size * cfg.window // model_cfg.downsample
        model.quantizer.mark_initialised(count=max(1.0, latents_per_batch / model_cfg.nb_code))
    model.quantizer.frozen = cfg.freeze_codebook
    model.to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    state_path, log_path = out_dir / "train_state.pt", out_dir / "train_log.jsonl"
    start = 0
    if resume and state_path.exists():
        start = _load_state(state_path, model, opt)
        print(f"resuming from {state_path} at step {start}")
    elif log_path.exists():
        log_path.unlink()  # fresh run: don't mix logs

    pos = position_slice(model_cfg.input_dim)
    val = validation_windows(val_motions, cfg.window) if val_motions else None
    val_ood = validation_windows(val_ood_motions, cfg.window) if val_ood_motions else None
    if cfg.joint_weight and stats is None:
        raise ValueError("joint_weight needs the dataset statistics (stats=(mean, std))")
    if stats is not None:
        mean_t, std_t = (torch.as_tensor(np.asarray(a), dtype=torch.float32, device=cfg.device)
                         for a in stats)
    sampler = WindowSampler(motions, weights, cfg)
    if str(cfg.device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True   # fixed shapes: pick the fastest kernels once
    sums, n_avg, t0 = {}, 0, time.time()
    t_begin, t_probe = time.time(), None
    bar = tqdm(initial=start, total=cfg.steps, desc="vqvae", dynamic_ncols=True)
    for step in itertools.count(start):
        if step >= cfg.steps:
            break
        if cfg.time_budget_s and step == start + 50:
            t_probe = time.time()
        if cfg.time_budget_s and step == start + 250:
            _fit_budget(cfg, step, (time.time() - t_probe) / 200, time.time() - t_begin, bar)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler(step)

        recon, commit, ppl = model(x)
        loss_recon = F.smooth_l1_loss(recon, x)
        loss_pos = F.smooth_l1_loss(recon[..., pos], x[..., pos])
        loss_root = F.smooth_l1_loss(recon[..., :4], x[..., :4])
        loss = (loss_recon + cfg.pos_weight * loss_pos + cfg.root_weight * loss_root
                + cfg.commit_weight * commit)
        loss_joint = torch.zeros((), device=x.device)
        if cfg.joint_weight:
            d = aligned_joints(recon * std_t + mean_t) - aligned_joints(x * std_t + mean_t)
            loss_joint = torch.sqrt(d.pow(2).sum(-1) + 1e-8).mean()
            loss = loss + cfg.joint_weight * loss_joint
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        for k, v in (("loss", loss), ("recon", loss_recon), ("pos", loss_pos), ("root", loss_root), ("joint_m", loss_joint),
                     ("commit", commit),
                     ("perplexity", ppl)):
            sums[k] = sums.get(k, 0.0) + v.detach()   # no device sync per step
        n_avg += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rec = {"step": done, "lr": lr, **{k: float(v) / n_avg for k, v in sums.items()},
                   "sec_per_step": (time.time() - t0) / n_avg}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}", ppl=f"{rec['perplexity']:.1f}")
            sums, n_avg, t0 = {}, 0, time.time()
        if val is not None and len(val) and (done % cfg.val_every == 0 or done == cfg.steps):
            row = {"step": done, "kind": "val", **validate(model, val)}
            if val_ood is not None and len(val_ood):
                row.update({k.replace("val_", "val_ood_"): v for k, v in validate(model, val_ood).items()})
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _save_state(state_path, model, opt, done)
        bar.update(1)
    bar.close()

    model.eval().cpu()
    save_pretrained_atomic(model, out_dir / "model")
    (out_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return model
