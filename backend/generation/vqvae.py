"""Motion VQ-VAE (T2M-GPT architecture family): the motion tokenizer.

A 1-D conv encoder downsamples (B, T, 263) HumanML3D features by stride_t**down_t
(= 4) in time, an EMA codebook with dead-code reset quantizes each latent frame,
and a mirrored conv decoder reconstructs the features.

Module and parameter names follow T2M-GPT's `HumanVQVAE.vqvae` exactly, so the
published t2m.pth loads by stripping the "vqvae." prefix (see `load_t2m_gpt`).
Note: T2M-GPT's residual stacks use the *reversed* dilation order (largest
first) in the encoder as well as the decoder; we do the same.

Public API:
    VQVAEConfig, VQVAEConfig.paper(), VQVAEConfig.embedded()
    MotionVQVAE(cfg): forward / encode / decode / save_pretrained / from_pretrained
    load_t2m_gpt(path_or_state_dict) -> MotionVQVAE
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.checkpoints import checkpoints_dir, load_folder, save_folder
from backend.data.dataset import open_corpus
from motioncore.features import Normalizer


# -----------------------------------------------------------------------------
# config


@dataclass
class VQVAEConfig:
    input_dim: int = 263  # HumanML3D feature size (KIT: 251)
    nb_code: int = 512  # codebook size
    code_dim: int = 512  # codebook vector size (= encoder output width)
    width: int = 512  # conv channels
    down_t: int = 2  # number of stride_t downsampling stages
    stride_t: int = 2
    depth: int = 3  # residual blocks per stage
    dilation_growth_rate: int = 3
    activation: str = "relu"  # inside residual blocks: relu | silu | gelu
    mu: float = 0.99  # EMA decay of the codebook

    def __post_init__(self):
        if self.stride_t < 2 or self.stride_t % 2:
            raise ValueError(f"stride_t must be even (got {self.stride_t})")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")

    @property
    def downsample(self) -> int:
        """Motion frames per code."""
        return self.stride_t**self.down_t

    @classmethod
    def paper(cls) -> "VQVAEConfig":
        """T2M-GPT / VimoRAG t2m.pth: 512 codes x 512 dims, width 512."""
        return cls()

    @classmethod
    def embedded(cls) -> "VQVAEConfig":
        """Small config that trains on a CPU."""
        return cls(nb_code=256, code_dim=256, width=256)


# -----------------------------------------------------------------------------
# encoder / decoder

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class ResConv1DBlock(nn.Module):
    """Pre-activation residual block: x + conv1x1(act(dilated_conv3(act(x))))."""

    def __init__(self, width: int, dilation: int, activation: str = "relu"):
        super().__init__()
        # norm1/norm2 are identities (T2M-GPT vq_norm=None); kept for the same module tree
        self.norm1 = nn.Identity()
        self.norm2 = nn.Identity()
        self.activation1 = _ACTIVATIONS[activation]()
        self.activation2 = _ACTIVATIONS[activation]()
        self.conv1 = nn.Conv1d(width, width, 3, 1, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(self.activation1(self.norm1(x)))
        h = self.conv2(self.activation2(self.norm2(h)))
        return x + h


class Resnet1D(nn.Module):
    """`depth` residual blocks with dilations growth**(depth-1), ..., growth, 1."""

    def __init__(self, width: int, depth: int, growth: int, activation: str = "relu"):
        super().__init__()
        dilations = [growth**i for i in range(depth)][::-1]  # reversed, as in T2M-GPT
        self.model = nn.Sequential(*[ResConv1DBlock(width, d, activation) for d in dilations])

    def forward(self, x):
        return self.model(x)


class Encoder(nn.Module):
    """(B, input_dim, T) -> (B, code_dim, T / stride_t**down_t)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        w, s = cfg.width, cfg.stride_t
        layers = [nn.Conv1d(cfg.input_dim, w, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(nn.Sequential(
                nn.Conv1d(w, w, 2 * s, s, s // 2),
                Resnet1D(w, cfg.depth, cfg.dilation_growth_rate, cfg.activation),
            ))
        layers.append(nn.Conv1d(w, cfg.code_dim, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class Decoder(nn.Module):
    """(B, code_dim, N) -> (B, input_dim, N * stride_t**down_t)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        w = cfg.width
        layers = [nn.Conv1d(cfg.code_dim, w, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(nn.Sequential(
                Resnet1D(w, cfg.depth, cfg.dilation_growth_rate, cfg.activation),
                nn.Upsample(scale_factor=cfg.stride_t, mode="nearest"),
                nn.Conv1d(w, w, 3, 1, 1),
            ))
        layers += [nn.Conv1d(w, w, 3, 1, 1), nn.ReLU(), nn.Conv1d(w, cfg.input_dim, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


# -----------------------------------------------------------------------------
# quantizer


class QuantizeEMAReset(nn.Module):
    """Nearest-neighbour codebook with EMA updates and dead-code reset.

    Only `codebook` is saved in the state dict (as in T2M-GPT); the EMA statistics
    code_sum / code_count are non-persistent buffers. In training mode the first
    batch initialises the codebook, and every forward moves each code to the EMA
    mean of its assigned vectors; codes whose EMA count drops below 1 are replaced
    by random encoder outputs of the current batch. Eval mode changes nothing, nor does
    training with ``frozen`` set (fine-tuning that keeps every code's meaning).
    """

    def __init__(self, nb_code: int, code_dim: int, mu: float = 0.99):
        super().__init__()
        self.nb_code, self.code_dim, self.mu = nb_code, code_dim, mu
        self.register_buffer("codebook", torch.zeros(nb_code, code_dim))
        self.register_buffer("code_sum", torch.zeros(nb_code, code_dim), persistent=False)
        self.register_buffer("code_count", torch.zeros(nb_code), persistent=False)
        self.initialised = False
        self.frozen = False  # True: training never moves or resets a code

    @torch.no_grad()
    def mark_initialised(self, count: float = 1.0):
        """Call after loading a trained codebook: EMA stats restart from it, each code as if
        it had been assigned ``count`` vectors per batch. Fine-tuning needs about the real
        average (vectors per batch / nb_code): with 1, every code a batch happens not to use
        falls below the reset threshold at once and is replaced by a random vector."""
        self.code_sum.copy_(self.codebook * count)
        self.code_count.fill_(count)
        self.initialised = True

    def _random_rows(self, z):
        """nb_code rows drawn from z (N, C); tiled with a little noise if N < nb_code."""
        n = z.shape[0]
        if n >= self.nb_code:
            return z[torch.randperm(n, device=z.device)[: self.nb_code]]
        out = z.repeat(math.ceil(self.nb_code / n), 1)[: self.nb_code]
        return out + torch.randn_like(out) * (0.01 / math.sqrt(self.code_dim))

    @torch.no_grad()
    def _init_codebook(self, z):
        self.codebook.copy_(self._random_rows(z))
        self.mark_initialised()

    @torch.no_grad()
    def _ema_update(self, z, idx):
        batch_sum = torch.zeros_like(self.code_sum).index_add_(0, idx, z)
        batch_count = torch.bincount(idx, minlength=self.nb_code).to(z.dtype)
        self.code_sum.mul_(self.mu).add_(batch_sum, alpha=1.0 - self.mu)
        self.code_count.mul_(self.mu).add_(batch_count, alpha=1.0 - self.mu)
        alive = (self.code_count >= 1.0).unsqueeze(1)
        means = self.code_sum / self.code_count.unsqueeze(1)
        self.codebook.copy_(torch.where(alive, means, self._random_rows(z)))

    @torch.no_grad()
    def perplexity(self, idx):
        p = torch.bincount(idx, minlength=self.nb_code).float()
        p = p / p.sum()
        return torch.exp(-(p * torch.log(p + 1e-7)).sum())

    @torch.no_grad()
    def quantize(self, z):
        """(N, C) -> (N,) index of the nearest code (squared L2)."""
        cb = self.codebook.float()
        z = z.float()
        d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ cb.t() + cb.pow(2).sum(-1)[None]
        return d.argmin(-1)

    def dequantize(self, idx):
        return F.embedding(idx, self.codebook)

    def forward(self, x):
        """x (B, C, T) -> (quantized (B, C, T) with straight-through grads, commit_loss, perplexity)."""
        B, C, T = x.shape
        z = x.permute(0, 2, 1).reshape(-1, C)
        if self.training and not self.initialised:
            self._init_codebook(z.detach())
        idx = self.quantize(z)
        zq = self.dequantize(idx)
        if self.training and not self.frozen:
            self._ema_update(z.detach().float(), idx)
        commit_loss = F.mse_loss(z, zq.detach())
        zq = z + (zq - z).detach()  # straight-through estimator
        return zq.view(B, T, C).permute(0, 2, 1).contiguous(), commit_loss, self.perplexity(idx)


# -----------------------------------------------------------------------------
# full model


class MotionVQVAE(nn.Module):
    """Motion tokenizer. Inputs are z-normalised features (B, T, input_dim)."""

    def __init__(self, cfg: VQVAEConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or VQVAEConfig()
        # registration order = T2M-GPT's, so state_dict key order matches too
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = QuantizeEMAReset(cfg.nb_code, cfg.code_dim, cfg.mu)

    def _check_input(self, x):
        if x.ndim != 3 or x.shape[-1] != self.config.input_dim:
            raise ValueError(f"expected motion of shape (B, T, {self.config.input_dim}), got {tuple(x.shape)}")
        k = self.config.downsample
        if x.shape[1] % k:
            raise ValueError(f"motion length T={x.shape[1]} must be a multiple of {k} (the temporal downsampling factor)")

    def forward(self, x):
        """x (B, T, D) -> (reconstruction (B, T, D), commit_loss, perplexity)."""
        self._check_input(x)
        z = self.encoder(x.float().permute(0, 2, 1))
        zq, commit_loss, perplexity = self.quantizer(z)
        return self.decoder(zq).permute(0, 2, 1), commit_loss, perplexity

    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        """x (B, T, D) -> code indices (B, T // downsample), long. Never updates the codebook."""
        self._check_input(x)
        z = self.encoder(x.float().permute(0, 2, 1))
        B, C, N = z.shape
        return self.quantizer.quantize(z.permute(0, 2, 1).reshape(-1, C)).view(B, N)

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """codes (B, N) long -> motion (B, N * downsample, D)."""
        codes = torch.as_tensor(codes, device=self.quantizer.codebook.device).long()
        if codes.ndim != 2:
            raise ValueError(f"expected codes of shape (B, N), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.nb_code):
            raise ValueError(f"code indices must be in [0, {self.config.nb_code})")
        zq = self.quantizer.dequantize(codes).permute(0, 2, 1)
        return self.decoder(zq).permute(0, 2, 1)

    # --- persistence ---------------------------------------------------------

    def save_pretrained(self, directory, dtype: torch.dtype | None = None):
        """Write config.json + model.safetensors (params and codebook); dtype=torch.float16 halves the size."""
        save_folder(directory, self.state_dict(), self.config, dtype)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "MotionVQVAE":
        """Load a directory written by save_pretrained (weights come back as float32, eval mode)."""
        config, state = load_folder(directory, VQVAEConfig, "MotionVQVAE")
        model = cls(config)
        model.load_state_dict(state, strict=True)
        model.quantizer.mark_initialised()
        return model.to(device).eval()


# -----------------------------------------------------------------------------
# published T2M-GPT checkpoint


def _config_from_state_dict(sd) -> VQVAEConfig:
    """Read sizes off the weight shapes; what shapes cannot tell (dilation growth, mu) is the paper's."""
    cfg = VQVAEConfig.paper()
    kw = {}
    if "quantizer.codebook" in sd:
        kw["nb_code"], kw["code_dim"] = sd["quantizer.codebook"].shape
    if "encoder.model.0.weight" in sd:
        kw["width"], kw["input_dim"] = sd["encoder.model.0.weight"].shape[:2]
    stages = {int(m.group(1)) for k in sd if (m := re.fullmatch(r"encoder\.model\.(\d+)\.0\.weight", k))}
    if stages:
        kw["down_t"] = len(stages)
        kw["stride_t"] = sd[f"encoder.model.{min(stages)}.0.weight"].shape[-1] // 2
    blocks = {m.group(1) for k in sd if (m := re.fullmatch(r"encoder\.model\.2\.1\.model\.(\d+)\.conv1\.weight", k))}
    if blocks:
        kw["depth"] = len(blocks)
    kw = {k: int(v) for k, v in kw.items()}
    return VQVAEConfig(**{**asdict(cfg), **kw})


def load_t2m_gpt(path_or_state_dict, device="cpu") -> MotionVQVAE:
    """Load T2M-GPT's VQ-VAE checkpoint (t2m.pth: {'net': {'vqvae.…': tensor}}) into a MotionVQVAE."""
    if isinstance(path_or_state_dict, dict):
        sd, src = path_or_state_dict, "state dict"
    else:
        src = str(path_or_state_dict)
        if not Path(src).is_file():
            raise FileNotFoundError(f"T2M-GPT checkpoint not found: {src}")
        sd = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(sd.get("net"), dict):
        sd = sd["net"]
    sd = {k.removeprefix("vqvae."): v for k, v in sd.items()}

    model = MotionVQVAE(_config_from_state_dict(sd))
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:10]) + (f", ... (+{len(xs) - 10} more)" if len(xs) > 10 else "") if xs else "none"
        raise ValueError(
            f"{src} is not a T2M-GPT VQ-VAE checkpoint matching {model.config}:\n"
            f"  missing keys: {show(missing)}\n  unexpected keys: {show(unexpected)}\n"
            f"  shape mismatches (file vs model): {show(shapes)}"
        )
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model.quantizer.mark_initialised()
    return model.to(device).eval()


# ------------------------------------------------------------- shipped tokenizers
def load_normalizer(checkpoints: Path | None = None):
    """Mean/Std of the motion features: shipped with the VQ-VAE, else from the corpus."""
    d = Path(checkpoints or checkpoints_dir()) / "normalizer"
    if (d / "Mean.npy").is_file():
        return Normalizer.load(d)

    return open_corpus().normalizer


def load_llm_tokenizer(checkpoints: Path | None = None, name: str = "vqvae"):
    """(VQ-VAE, Normalizer) of the tokenizer folder ``name`` that a motion LLM writes codes for
    (``MotionLLMConfig.tokenizer``). A folder with its own Mean/Std (a tokenizer trained on
    another corpus version, say) uses those; others use ``normalizer/``."""
    ck = Path(checkpoints or checkpoints_dir())
    d = ck / name
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"the motion tokenizer {d} is missing (a motion LLM needs it)")
    norm = Normalizer.load(d) if (d / "Mean.npy").is_file() else load_normalizer(ck)
    return MotionVQVAE.from_pretrained(d).eval(), norm


