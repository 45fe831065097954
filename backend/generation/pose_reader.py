"""PoseReader: a video's sampled keypoints -> the motion tokens of the motion it shows.

Issue 12 asks the generator to *read* motion off a video (a cartwheel, its count, its speed) for
the kinds it never saw with words. The motion LLM reads a video through a 17-slot prefix and
has to learn where in time each pose lies through attention; measured by ``eval video-reading``
it writes about half of what a held-out database video shows. This module is the specialist:
a small non-autoregressive transformer that knows *when* each sampled frame was taken and
*when* each motion token plays, so alignment is given and only the reading is learned.

    frames   (F=16, 17, 3) person-centred keypoints (``motion_llm.pose_features``: positions +
             displacement to the next sampled frame), each at its time in the video (seconds)
    queries  one per motion token (``downsample`` frames at 20 fps), at its time in seconds,
             plus the linear interpolation of the frame encodings at that time
    output   (L, codebook) logits; ``write`` samples (or takes the argmax of) each position

Trained on the synthetic database's *train* videos (and their mirror images) against the VQ
codes of the motions they show (``train_llm.video_only_examples``: the same pairs the LLM's
video-only examples use), validated on a held-out tenth of them; the database's *test* videos
stay for ``eval video-reading``. ``save_pretrained`` / ``from_pretrained`` write a
``config.json`` + ``model.safetensors``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from backend.generation.motion_llm import pose_features
from backend.generation.tempo import TEMPO   # how much longer a led part's video plays for its words' speed

FPS = 20.0


@dataclass
class PoseReaderConfig:
    pose_dim: int = 85          # motion_llm.POSE_DIM: 17 x (x, y, conf) + 17 x (dx, dy)
    width: int = 192
    layers: int = 3             # encoder layers over frames; as many decoder layers over tokens
    heads: int = 4
    dropout: float = 0.1
    codebook_size: int = 256
    downsample: int = 4         # motion frames per token (the tokenizer's)
    max_tokens: int = 49        # the longest motion the LLM writes (196 frames)
    periods: tuple = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # seconds, for the time encoding

    def __post_init__(self):
        self.periods = tuple(float(p) for p in self.periods)


def frame_times(n_frames: int, num: int, fps: float = FPS) -> np.ndarray:
    """Seconds at which the ``num`` sampled frames of an ``n_frames`` video were taken (the
    database samples each frame at the centre of ``num`` equal spans: ``videos.decode``)."""
    idx = np.floor((np.arange(num) + 0.5) * n_frames / num)
    return (idx / fps).astype(np.float32)


def token_times(n_tokens: int, downsample: int = 4, fps: float = FPS) -> np.ndarray:
    """Seconds at the middle of each motion token's frames."""
    return ((np.arange(n_tokens) + 0.5) * downsample / fps).astype(np.float32)


def interp_weights(frames_t: np.ndarray, tokens_t: np.ndarray) -> np.ndarray:
    """(L, F) linear interpolation weights of the frame sequence at the token times (clamped at
    both ends): row t mixes the two sampled frames around token t."""
    F = len(frames_t)
    w = np.zeros((len(tokens_t), F), np.float32)
    for i, t in enumerate(tokens_t):
        j = int(np.searchsorted(frames_t, t))
        if j <= 0:
            w[i, 0] = 1.0
        elif j >= F:
            w[i, F - 1] = 1.0
        else:
            a, b = frames_t[j - 1], frames_t[j]
            r = 0.0 if b <= a else float((t - a) / (b - a))
            w[i, j - 1], w[i, j] = 1.0 - r, r
    return w


class TimeEncoding(nn.Module):
    def __init__(self, periods, width: int):
        super().__init__()
        self.register_buffer("freq", 2 * math.pi / torch.tensor(periods, dtype=torch.float32), persistent=False)
        self.proj = nn.Linear(2 * len(periods) + 2, width)

    def forward(self, t: torch.Tensor, duration: torch.Tensor) -> torch.Tensor:
        """t (B, N) seconds, duration (B,) seconds -> (B, N, width)."""
        a = t[..., None] * self.freq
        rel = t / duration.clamp_min(1e-3)[:, None]
        return self.proj(torch.cat([a.sin(), a.cos(), rel[..., None], duration[:, None, None].expand_as(rel[..., None]) / 10.0], -1))


@dataclass
class ReaderBatch:
    poses: torch.Tensor      # (B, F, pose_dim)
    frame_t: torch.Tensor    # (B, F) seconds
    token_t: torch.Tensor    # (B, L) seconds
    interp: torch.Tensor     # (B, L, F)
    duration: torch.Tensor   # (B,) seconds
    mask: torch.Tensor       # (B, L) True where a token is
    targets: torch.Tensor    # (B, L) code or -100


class PoseReader(nn.Module):
    """See the module docstring."""

    def __init__(self, config: PoseReaderConfig | None = None):
        super().__init__()
        self.config = cfg = config or PoseReaderConfig()
        d = cfg.width
        self.frame_in = nn.Sequential(nn.Linear(cfg.pose_dim, d), nn.GELU(), nn.Linear(d, d))
        self.frame_time = TimeEncoding(cfg.periods, d)
        self.token_time = TimeEncoding(cfg.periods, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True),
            cfg.layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True),
            cfg.layers)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.codebook_size)

    # -- inputs ------------------------------------------------------------------------------
    def build_batch(self, keypoints: list[np.ndarray], durations: list[float], n_tokens: list[int],
                    codes: list[np.ndarray] | None = None) -> ReaderBatch:
        """``keypoints[i]`` (F, 17, 3) sampled from a video ``durations[i]`` seconds long;
        ``n_tokens[i]`` tokens to write (the motion's length); ``codes``: training targets."""
        cfg = self.config
        B = len(keypoints)
        if not (len(durations) == len(n_tokens) == B) or (codes is not None and len(codes) != B):
            raise ValueError("keypoints, durations, n_tokens (and codes) must have one entry per video")
        F = max(len(k) for k in keypoints)
        L = max(int(n) for n in n_tokens)
        if L < 1 or L > cfg.max_tokens:
            raise ValueError(f"n_tokens must be in [1, {cfg.max_tokens}], got {L}")
        poses = np.zeros((B, F, cfg.pose_dim), np.float32)
        ft = np.zeros((B, F), np.float32)
        tt = np.zeros((B, L), np.float32)
        w = np.zeros((B, L, F), np.float32)
        mask = np.zeros((B, L), bool)
        tg = np.full((B, L), -100, np.int64)
        for i, (kp, dur, n) in enumerate(zip(keypoints, durations, n_tokens)):
            kp = np.asarray(kp, np.float32)
            f = len(kp)
            nf = max(1, int(round(float(dur) * FPS)))
            poses[i, :f] = pose_features(kp)
            ft[i, :f] = frame_times(nf, f)
            ft[i, f:] = ft[i, f - 1]
            tt[i, :n] = token_times(int(n), cfg.downsample)
            w[i, :n, :f] = interp_weights(ft[i, :f], tt[i, :n])
            mask[i, :n] = True
            if codes is not None:
                c = np.asarray(codes[i], np.int64)[:n]
                tg[i, :len(c)] = c
        dur = torch.tensor([max(float(d), 1e-3) for d in durations], dtype=torch.float32)
        return ReaderBatch(torch.from_numpy(poses), torch.from_numpy(ft), torch.from_numpy(tt),
                           torch.from_numpy(w), dur, torch.from_numpy(mask), torch.from_numpy(tg))

    # -- model -------------------------------------------------------------------------------
    def forward(self, b: ReaderBatch) -> torch.Tensor:
        """(B, L, codebook) logits."""
        h = self.frame_in(b.poses) + self.frame_time(b.frame_t, b.duration)
        h = self.encoder(h)
        q = self.token_time(b.token_t, b.duration) + torch.bmm(b.interp, h)
        out = self.decoder(q, h, tgt_key_padding_mask=~b.mask)
        return self.head(self.norm(out))

    def loss(self, b: ReaderBatch) -> torch.Tensor:
        logits = self(b)
        return nn.functional.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def logits(self, keypoints, durations, n_tokens) -> list[np.ndarray]:
        """Per video, (n_tokens, codebook) log-probabilities."""
        self.eval()
        b = self.build_batch(keypoints, durations, n_tokens)
        lp = torch.log_softmax(self(b).float(), -1).numpy()
        return [lp[i, :int(n)] for i, n in enumerate(n_tokens)]

    @torch.no_grad()
    def write(self, keypoints, durations, n_tokens, temperature: float = 0.0, seed: int = 0) -> list[np.ndarray]:
        """Codes per video: the most likely code at each position (``temperature`` 0) or a sample."""
        rng = np.random.default_rng(seed)
        out = []
        for lp in self.logits(keypoints, durations, n_tokens):
            if temperature <= 0:
                out.append(lp.argmax(-1).astype(np.int64))
                continue
            p = np.exp((lp - lp.max(-1, keepdims=True)) / temperature)
            p /= p.sum(-1, keepdims=True)
            out.append(np.array([rng.choice(len(r), p=r) for r in p], np.int64))
        return out

    # -- files -------------------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
        cfg["periods"] = list(cfg["periods"])
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(d / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory) -> "PoseReader":
        d = Path(directory)
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise FileNotFoundError(f"no pose reader in {d} (config.json + model.safetensors; "
                                    "`python -m backend train pose-reader --ship` makes one)")
        model = cls(PoseReaderConfig(**json.loads((d / "config.json").read_text())))
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model.eval()


def load_pose_reader(folder=None) -> "PoseReader | None":
    """The pose reader in ``folder`` (default ``checkpoints/pose-reader``), or None when absent."""
    from backend.checkpoints import checkpoints_dir

    d = Path(folder) if folder else checkpoints_dir() / "pose-reader"
    if not (d / "model.safetensors").is_file():
        if folder:
            raise FileNotFoundError(f"no pose reader in {d}")
        return None
    return PoseReader.from_pretrained(d)


def video_duration(record: dict) -> float:
    """Seconds of a database video (its record's ``duration``, else frames / fps)."""
    if record.get("duration"):
        return float(record["duration"])
    return float(record.get("n_frames", 0)) / float(record.get("fps") or FPS)


READER_TEMPERATURE = 0.5   # the drafts after the first (the most likely code per position)


def draft_codes(reader: "PoseReader", keypoints, durations, drafts: int, temperature: float = READER_TEMPERATURE,
                seed: int = 0, n_tokens: list[int] | None = None,
                tempo: list[float] | None = None) -> list[list[np.ndarray]]:
    """Per video, ``drafts`` code sequences, ``n_tokens`` long (default: as long as the video):
    the most likely code at each position first, then samples at ``temperature``. ``tempo``: per
    video, a factor f != 1 adds one more draft, the most likely codes of the video played f
    times as long (f > 1: slower; a reader trained with ``--stretch`` learned what that means;
    ``n_tokens`` stays the part's length when one was asked, else it scales with f)."""
    n = list(n_tokens) if n_tokens is not None else [reader_tokens(d, reader) for d in durations]
    out = [[c] for c in reader.write(keypoints, durations, n, temperature=0.0)]
    for k in range(1, int(drafts)):
        for o, c in zip(out, reader.write(keypoints, durations, n, temperature=temperature, seed=seed + k)):
            o.append(c)
    slow = [i for i, f in enumerate(tempo or []) if f and float(f) != 1.0]
    if slow and drafts > 0:
        durs = [float(durations[i]) * float(tempo[i]) for i in slow]
        m = [n[i] if n_tokens is not None else reader_tokens(d, reader) for i, d in zip(slow, durs)]
        for i, c in zip(slow, reader.write([keypoints[i] for i in slow], durs, m, temperature=0.0)):
            out[i].append(c)
    return out




def asked_tempo(manner: dict, gate: float = 0.5) -> float:
    """The tempo factor a led part's words ask (``Restater.manner``): ``TEMPO`` of a slow/fast
    speed read at least ``gate`` sure, else 1."""
    if manner.get("speed") in TEMPO and manner.get("sure", {}).get("speed", 0.0) >= gate:
        return TEMPO[manner["speed"]]
    return 1.0


def with_drafts(codes: list, owners: list[int], drafts: dict[int, list]) -> tuple[list, list[int]]:
    """Generated rows (row r belongs to part ``owners[r]``) with each part's ``drafts`` added, in
    part order (a part's own rows first, then its drafts)."""
    codes, owners = list(codes), list(owners)
    for part, d in drafts.items():
        codes += list(d)
        owners += [part] * len(d)
    order = sorted(range(len(owners)), key=lambda r: owners[r])
    return [codes[r] for r in order], [owners[r] for r in order]


def first_of_each(codes: list, owners: list[int], parts: int) -> list:
    """The first row of each part (when there is no picker to choose)."""
    first: dict = {}
    for c, o in zip(codes, owners):
        first.setdefault(o, c)
    return [first[i] for i in range(parts)]


def reader_tokens(duration: float, reader: "PoseReader") -> int:
    """Tokens that cover a video of ``duration`` seconds (at least 2, at most the reader's max)."""
    c = reader.config
    return int(min(c.max_tokens, max(2, round(float(duration) * FPS / c.downsample))))


__all__ = ["PoseReader", "READER_TEMPERATURE", "TEMPO", "asked_tempo", "draft_codes", "first_of_each", "load_pose_reader", "with_drafts", "reader_tokens", "PoseReaderConfig", "ReaderBatch", "frame_times", "interp_weights",
           "token_times", "video_duration"]
