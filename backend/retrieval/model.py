"""Gemini-MVR: text -> video retrieval with an action channel, an object channel and a router.

Action channel. 2D keypoints (16 frames x 17 COCO joints x (x, y, confidence)) go through a
small spatio-temporal keypoint encoder in the spirit of MotionBERT (per-joint embedding, then
blocks that alternate attention over the joints of a frame and over the frames of a joint),
are pooled over joints into per-frame features, get a temporal positional embedding, pass a
transformer temporal encoder with a residual connection and are mean-pooled into ``a``. The
text side embeds the sentence's *predicate* (the verb phrase: the subject is stripped) with
frozen MiniLM and a trained projection into ``p``; with ``RetrieverConfig.text_cues`` the
projection also reads a few word cues (sides, direction, speed, repetitions; ``cues.py``),
which MiniLM's embedding hardly separates.

Caption memory (``RetrieverConfig.memory_size`` > 0, ``attach_caption_memory``). The trained
projection generalises poorly to verbs its training captions never used ("creeping on all fours"
landed near walking videos, although the keypoint side separates crawling from walking
perfectly), while MiniLM itself knows such paraphrases. So the retriever keeps the predicate
embeddings of its training captions; a query's ``p`` is mixed with the projections of its
``memory_k`` nearest training predicates in MiniLM space (softmax weights at ``memory_tau``):
``p = norm(mix * p_query + (1 - mix) * norm(sum_j w_j p_j))``. Training never uses the memory;
it is attached after stage 1 (``train router --caption-memory``).

Object channel. A pretrained video model (I3D, Kinetics-400; features computed at ingestion)
gives the video feature, a trained linear map gives ``o``; frozen MiniLM on the whole caption
and a trained projection give ``g``.

Router. ``ActionRouter``: a linear layer on ``a`` gives I = exp(W a + b) > 0, and the score is
exactly the paper's

    s(t, v) = I0 / (I0 + I1) * <p, a> + I1 / (I0 + I1) * <g, o>

(all embeddings L2-normalised), i.e. a softmax over the two logits. The weights depend only on
the video, so the fused score is one inner product between [p ; g] and [w0 a ; w1 o].
Appearance (``RetrieverConfig.appearance``, not in the paper; ``add_appearance``). The object
channel can also read what a video looks like: a second pair of projections (I3D -> ``e``,
MiniLM of the whole caption -> ``h``) whose product is added to the object score when the words
name a colour or a setting (``scene.scene_cues``, appended to the caption embedding by
``encode_captions``), times a learned scale: ``<g, o> + c(t) lam <h, e>``. Stored as wider
embeddings (``o = [o ; e]``, ``g = [g ; c lam h]``), so the fused score stays one inner product and
a query that names no colour or setting scores exactly as without it (docs/lab-notebook.md, *Scene words*).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.checkpoints import load_folder, save_folder
from backend.data.text import get_minilm
from backend.retrieval.cues import N_CUES, word_cues
from backend.retrieval.scene import N_SCENE_CUES, scene_cues, strip_scene

_SUBJECT = re.compile(
    r"^\s*(?:(?:a|an|the|one|some|this|that)\s+)?(?:young\s+|old\s+|single\s+)?"
    r"(?:person|man|woman|human|individual|figure|guy|boy|girl|character|people|someone|somebody|"
    r"he|she|they|actor|dancer|athlete|adult)\b\s*(?:(?:is|was|are)\s+)?", re.IGNORECASE)


def extract_predicate(caption: str) -> str:
    """The verb phrase of a caption: "a man is running in a circle." -> "running in a circle".
    Falls back to the whole caption when no subject is recognised. An appearance clause
    ("..., dressed in red, in front of a white wall": ``scene.describe_scene``) is left to the
    object channel's whole-caption side."""
    text = strip_scene(caption.strip()).rstrip(".!").strip()
    rest = _SUBJECT.sub("", text, count=1).strip()
    return rest or text


@dataclass
class RetrieverConfig:
    frames: int = 16
    joints: int = 17
    width: int = 128              # keypoint encoder width
    st_blocks: int = 2            # spatial+temporal attention blocks of the keypoint encoder
    temporal_layers: int = 2      # transformer temporal encoder (with residual)
    heads: int = 4
    embed_dim: int = 256          # dim of a, p, o, g
    text_dim: int = 384           # MiniLM
    text_cues: bool = False       # the predicate head also reads the word cues (``cues.py``)
    object_in: int = 1024         # I3D pooled features
    dropout: float = 0.1
    init_temperature: float = 0.07
    memory_size: int = 0          # training-caption predicates kept for the caption memory (0: none)
    memory_k: int = 5             # neighbours a query is mixed with
    memory_tau: float = 0.05      # softmax temperature over their MiniLM cosines
    memory_mix: float = 0.5       # share of the query's own projection
    appearance: bool = False      # the object channel also reads appearance words (module docstring)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True,
                                                norm_first=True, activation="gelu")

    def forward(self, x):
        return self.layer(x)


class KeypointEncoder(nn.Module):
    """(B, T, J, 3) keypoints -> (B, T, width) per-frame features (alternating spatial and
    temporal attention, MotionBERT-style, then confidence-weighted pooling over joints)."""

    def __init__(self, cfg: RetrieverConfig):
        super().__init__()
        self.embed = nn.Linear(3, cfg.width)
        self.joint_pos = nn.Parameter(torch.zeros(1, 1, cfg.joints, cfg.width))
        self.frame_pos = nn.Parameter(torch.zeros(1, cfg.frames, 1, cfg.width))
        self.spatial = nn.ModuleList(_Block(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.st_blocks))
        self.temporal = nn.ModuleList(_Block(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.st_blocks))
        self.norm = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.joint_pos, std=0.02)
        nn.init.normal_(self.frame_pos, std=0.02)

    def forward(self, kp: torch.Tensor) -> torch.Tensor:
        B, T, J, _ = kp.shape
        x = self.embed(kp) + self.joint_pos + self.frame_pos[:, :T]
        for sp, tm in zip(self.spatial, self.temporal):
            x = sp(x.reshape(B * T, J, -1)).reshape(B, T, J, -1)
            x = tm(x.permute(0, 2, 1, 3).reshape(B * J, T, -1)).reshape(B, J, T, -1).permute(0, 2, 1, 3)
        w = kp[..., 2:3].clamp(min=0) + 1e-3
        return self.norm((x * w).sum(2) / w.sum(2))


class ActionEncoder(nn.Module):
    """Keypoints -> per-frame action features (B, T, D) and the pooled action embedding ``a``."""

    def __init__(self, cfg: RetrieverConfig):
        super().__init__()
        self.keypoints = KeypointEncoder(cfg)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.frames, cfg.embed_dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(cfg.embed_dim, cfg.heads, 2 * cfg.embed_dim, cfg.dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.temporal = nn.TransformerEncoder(layer, cfg.temporal_layers, enable_nested_tensor=False)

    def frame_features(self, kp: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.keypoints(kp)) + self.pos[:, :kp.shape[1]]
        return x + self.temporal(x)                       # residual around the temporal encoder

    def forward(self, kp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.frame_features(kp)
        return frames, F.normalize(frames.mean(1), dim=-1)


def _text_head(cfg: RetrieverConfig, extra: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cfg.text_dim + extra, cfg.embed_dim * 2), nn.GELU(),
                         nn.Dropout(cfg.dropout), nn.Linear(cfg.embed_dim * 2, cfg.embed_dim))


class ActionRouter(nn.Module):
    """Linear(a) -> two logits; weights I_k / (I0 + I1) with I = exp(logit) (non-negative)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)                 # starts at 0.5 / 0.5

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        I = torch.exp(self.linear(a).clamp(-30, 30))
        return I / I.sum(-1, keepdim=True)


class GeminiMVR(nn.Module):
    def __init__(self, cfg: RetrieverConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or RetrieverConfig()
        self.action = ActionEncoder(cfg)
        self.predicate = _text_head(cfg, N_CUES if cfg.text_cues else 0)  # MiniLM(predicate) [+ cues] -> p
        self.object_video = nn.Linear(cfg.object_in, cfg.embed_dim)   # I3D -> o
        self.object_text = _text_head(cfg)               # MiniLM(caption) -> g
        self.router = ActionRouter(cfg.embed_dim)
        if cfg.appearance:
            self._make_appearance()
        scale = float(np.log(1 / cfg.init_temperature))
        self.logit_scale = nn.Parameter(torch.tensor([scale, scale, scale]))  # action, object, fused
        if cfg.memory_size:
            self.register_buffer("caption_memory", torch.zeros(cfg.memory_size, self._pred_width()))

    def _make_appearance(self) -> None:
        cfg = self.config
        self.appearance_video = nn.Linear(cfg.object_in, cfg.embed_dim)    # I3D -> e
        self.appearance_text = _text_head(cfg)                            # MiniLM(caption) -> h
        self.appearance_scale = nn.Parameter(torch.zeros(()))             # log of lam

    def add_appearance(self) -> "GeminiMVR":
        """Give a finished retriever the appearance projections (untrained; train them with
        ``train.train_appearance``). Scores of queries naming no colour or setting are unchanged."""
        if not self.config.appearance:
            self.config.appearance = True
            self._make_appearance()
        return self

    def _pred_width(self) -> int:
        return self.config.text_dim + (N_CUES if self.config.text_cues else 0)

    def attach_caption_memory(self, predicate_emb: torch.Tensor, k: int = 5, tau: float = 0.05,
                              mix: float = 0.5) -> "GeminiMVR":
        """Keep ``predicate_emb`` ((N, text_dim [+ N_CUES]), as ``encode_captions`` gives it for
        the training captions) as the caption memory (module docstring); replaces any earlier
        one. ``k`` 0 removes it."""
        if not 0.0 <= mix <= 1.0 or tau <= 0 or k < 0:
            raise ValueError(f"caption memory needs k >= 0, tau > 0 and mix in [0, 1]; got {k}, {tau}, {mix}")
        cfg = self.config
        if "caption_memory" in self._buffers:
            del self._buffers["caption_memory"]
        if k == 0 or len(predicate_emb) == 0:
            cfg.memory_size = 0
            return self
        mem = predicate_emb[:, :self._pred_width()].float()
        if mem.shape[1] != self._pred_width():
            raise ValueError(f"caption memory needs {self._pred_width()} columns, got {mem.shape[1]}")
        cfg.memory_size, cfg.memory_k, cfg.memory_tau, cfg.memory_mix = len(mem), min(k, len(mem)), tau, mix
        self.register_buffer("caption_memory", mem.to(self.logit_scale.device).clone())
        return self

    def _recall(self, pred: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Mix each query's projection ``p`` with those of its nearest memory predicates."""
        cfg, d = self.config, self.config.text_dim
        mem = self.caption_memory
        sim = F.normalize(pred[..., :d], dim=-1) @ F.normalize(mem[:, :d], dim=-1).T
        top = sim.topk(cfg.memory_k, dim=-1)
        w = torch.softmax(top.values / cfg.memory_tau, dim=-1)
        near = F.normalize(self.predicate(mem[top.indices]), dim=-1)       # (N, k, D)
        recalled = F.normalize((w.unsqueeze(-1) * near).sum(-2), dim=-1)
        return F.normalize(cfg.memory_mix * p + (1 - cfg.memory_mix) * recalled, dim=-1)

    # ---------------------------------------------------------------------------- video side
    def encode_video(self, keypoints: torch.Tensor, object_feats: torch.Tensor) -> dict:
        """{"frames" (B,T,D), "a" (B,D), "o" (B,D; B,2D with appearance), "w" (B,2)} for a batch of videos."""
        frames, a = self.action(keypoints)
        return {"frames": frames, "a": a, "o": self.encode_object(object_feats), "w": self.router(a)}

    def encode_object(self, object_feats: torch.Tensor) -> torch.Tensor:
        """``o`` of I3D features: (B, D), or (B, 2 D) ``[o ; e]`` with ``config.appearance``."""
        o = F.normalize(self.object_video(object_feats), dim=-1)
        if self.config.appearance:
            o = torch.cat([o, F.normalize(self.appearance_video(object_feats), dim=-1)], -1)
        return o

    # ----------------------------------------------------------------------------- text side
    def encode_text(self, predicate_emb: torch.Tensor, caption_emb: torch.Tensor) -> dict:
        """From frozen MiniLM embeddings of the predicate and of the whole caption.
        ``predicate_emb`` is (N, text_dim) or, as ``encode_captions`` gives it, (N, text_dim +
        N_CUES) with the word cues last; the cues are read only with ``config.text_cues``."""
        d = self.config.text_dim
        if self.config.text_cues:
            if predicate_emb.shape[-1] != d + N_CUES:
                raise ValueError(f"this retriever reads word cues: predicate embeddings need {d} + "
                                 f"{N_CUES} columns (encode_captions), got {predicate_emb.shape[-1]}")
        else:
            predicate_emb = predicate_emb[..., :d]
        p = F.normalize(self.predicate(predicate_emb), dim=-1)
        if self.config.memory_size:
            p = self._recall(predicate_emb, p)
        whole = caption_emb[..., :d]
        g = F.normalize(self.object_text(whole), dim=-1)
        if self.config.appearance:
            named = (caption_emb[..., d:].sum(-1, keepdim=True) > 0).to(g.dtype)   # a colour or a setting
            h = F.normalize(self.appearance_text(whole), dim=-1)
            g = torch.cat([g, named * self.appearance_scale.exp() * h], -1)
        return {"p": p, "g": g}

    @staticmethod
    def fused_scores(text: dict, video: dict) -> dict:
        """(M, N) channel scores and the paper's fused score for every text x video pair."""
        s_act = text["p"] @ video["a"].T
        s_obj = text["g"] @ video["o"].T
        w = video["w"]
        return {"action": s_act, "object": s_obj, "fused": w[:, 0] * s_act + w[:, 1] * s_obj}

    # --------------------------------------------------------------------------- save / load
    def save_pretrained(self, directory, dtype: torch.dtype | None = None):
        return save_folder(directory, self.state_dict(), self.config, dtype)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "GeminiMVR":
        cfg, state = load_folder(directory, RetrieverConfig, "Gemini-MVR retriever")
        model = cls(cfg)
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()


def encode_captions(captions: list[str], minilm=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen MiniLM embeddings of captions: (predicate with the caption's word cues appended
    (N, 384 + N_CUES), whole caption with its scene cues appended (N, 384 + N_SCENE_CUES)). A
    retriever without ``text_cues`` ignores the word cues, one without ``appearance`` the scene
    cues."""
    enc = minilm or get_minilm()
    with torch.no_grad():
        pred = enc.encode([extract_predicate(c) for c in captions])
        whole = enc.encode(list(captions))
    pred = torch.as_tensor(pred, dtype=torch.float32)
    cues = torch.from_numpy(word_cues(list(captions))).reshape(len(captions), N_CUES)
    scene = torch.from_numpy(scene_cues(list(captions))).reshape(len(captions), N_SCENE_CUES)
    whole = torch.as_tensor(whole, dtype=torch.float32).reshape(len(captions), -1)
    return torch.cat([pred.reshape(len(captions), -1), cues], 1), torch.cat([whole, scene], 1)


__all__ = ["ActionEncoder", "ActionRouter", "GeminiMVR", "KeypointEncoder", "RetrieverConfig",
           "encode_captions", "extract_predicate"]
