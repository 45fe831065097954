"""``InstructionChecker``: reads off a motion what a prompt can ask of it.

For each of the corpus's 16 motion kinds it predicts whether the motion contains that kind,
and, for the kind's segment, the number of repetitions (1-5), the speed (slow / normal /
fast), the limb side (left / right: kicks, punches, spin-kicks) and the turn (none / left /
right: turning, spinning, curved paths, cartwheel and roll direction). Input: HumanML3D
features (foot contacts dropped), z-normalised with the corpus statistics stored in the model.

It is a judge, like the evaluator: it trains on real motions (train split + the ``ood_judge``
half of the OOD motions) and is verified on held-out real motions before it scores any
generator (``python -m backend eval follow``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from backend.checkpoints import load_folder, save_folder

KINDS = ("walk", "turn", "run", "jump", "kick", "punch", "spin", "spinkick", "dance_a", "dance_b",
         "getup_facedown", "getup_faceup", "cartwheel", "backflip", "crawl", "roll")
MAX_REPS = 5
SPEEDS = ("slow", "normal", "fast")
SIDES = ("left", "right")
TURNS = ("none", "left", "right")
HEADS = {"reps": MAX_REPS, "speed": len(SPEEDS), "side": len(SIDES), "turn": len(TURNS)}


@dataclass
class CheckerConfig:
    input_dim: int = 259        # 263 features without the 4 foot contacts
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1


class InstructionChecker(nn.Module):
    def __init__(self, config: CheckerConfig | None = None):
        super().__init__()
        self.config = cfg = config or CheckerConfig()
        self.conv = nn.Sequential(
            nn.Conv1d(cfg.input_dim, cfg.hidden, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout),
            nn.Conv1d(cfg.hidden, cfg.hidden, 3, 1, 1), nn.LeakyReLU(0.2))
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                          bidirectional=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        k = len(KINDS)
        self.presence = nn.Linear(4 * cfg.hidden, k)
        self.heads = nn.ModuleDict({name: nn.Linear(4 * cfg.hidden, k * n) for name, n in HEADS.items()})
        self.register_buffer("mean", torch.zeros(cfg.input_dim))
        self.register_buffer("std", torch.ones(cfg.input_dim))

    def set_normalization(self, mean, std) -> "InstructionChecker":
        d = self.config.input_dim
        self.mean.copy_(torch.as_tensor(np.asarray(mean)[:d], dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.asarray(std)[:d], dtype=torch.float32))
        return self

    def batch(self, features: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised (T_i, 263) features -> padded normalised tensor + lengths."""
        d = self.config.input_dim
        lengths = torch.tensor([max(2, len(f)) for f in features])
        x = np.zeros((len(features), int(lengths.max()), d), np.float32)
        valid = np.zeros(x.shape[:2] + (1,), np.float32)
        for i, f in enumerate(features):
            x[i, :len(f)] = np.asarray(f, dtype=np.float32)[:, :d]
            valid[i, :len(f)] = 1
        dev = self.mean.device
        x = (torch.from_numpy(x).to(dev) - self.mean) / self.std * torch.from_numpy(valid).to(dev)
        return x, lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)                # (B, T/2, H)
        steps = torch.clamp((lengths + 1) // 2, 1, h.shape[1])
        packed = nn.utils.rnn.pack_padded_sequence(h, steps.cpu(), batch_first=True, enforce_sorted=False)
        out, last = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        mask = (torch.arange(h.shape[1], device=h.device)[None] < steps.to(h.device)[:, None]).float().unsqueeze(-1)
        pooled = (out * mask).sum(1) / mask.sum(1)
        final = torch.cat([last[-2], last[-1]], dim=-1)
        z = torch.cat([pooled, final], dim=-1)
        k = len(KINDS)
        res = {"presence": self.presence(z)}
        for name, n in HEADS.items():
            res[name] = self.heads[name](z).view(-1, k, n)
        return res

    @torch.no_grad()
    def probabilities(self, features: list[np.ndarray], batch: int = 64) -> list[dict]:
        """Per motion: {"presence": (16,) probabilities, "reps"/"speed"/"side"/"turn": (16, n)
        class probabilities per kind}."""
        self.eval()
        out = []
        for i in range(0, len(features), batch):
            x, lengths = self.batch(features[i:i + batch])
            r = self.forward(x, lengths)
            p = torch.sigmoid(r["presence"]).cpu().numpy()
            cls = {name: torch.softmax(r[name], -1).cpu().numpy() for name in HEADS}
            for b in range(len(p)):
                out.append({"presence": p[b], **{name: cls[name][b] for name in HEADS}})
        return out

    def predict(self, features: list[np.ndarray], batch: int = 64) -> list[dict]:
        """Per motion: {"presence": (16,) probabilities, "reps"/"speed"/"side"/"turn": (16,)
        predicted class index per kind}."""
        return [{"presence": p["presence"], **{name: p[name].argmax(-1) for name in HEADS}}
                for p in self.probabilities(features, batch)]

    def save_pretrained(self, directory, dtype=None):
        save_folder(directory, self.state_dict(), self.config, dtype)

    @classmethod
    def from_pretrained(cls, directory) -> "InstructionChecker":
        config, state = load_folder(directory, CheckerConfig, "InstructionChecker")
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.eval()
