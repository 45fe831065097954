"""Text-motion evaluators of the Guo et al. (CVPR 2022) protocol: FID, R-Precision,
diversity, MM-Dist are computed elsewhere on the 512-d embeddings these give.

Two evaluators share the motion-side modules and one interface (`Evaluator`):

* `GuoEvaluator` — the published HumanML3D extractor (`text_mot_match/model/finest.tar`),
  GloVe word vectors + POS one-hots through a BiGRU text encoder. Module and parameter
  names/shapes are those of the original `MovementConvEncoder`, `MotionEncoderBiGRUCo`
  and `TextEncoderBiGRUCo`, so the checkpoint loads with strict key matching.
* `TextMotionEvaluator` — our embedded evaluator: frozen all-MiniLM-L6-v2 sentence
  embeddings (backend/data/text.py) + a trainable MLP head on the text side, the same
  movement-conv + BiGRU structure (configurable sizes) on the motion side.

Motion side (both): the last 4 feature dims (foot contacts, [259:263]) are dropped; two
stride-2 convs turn frames into "movement" tokens (unit length 4); a BiGRU runs over
lengths // 4 tokens (packed sequences) and its two final states feed
Linear -> LayerNorm -> LeakyReLU(0.2) -> Linear to the 512-d co-embedding space.

Protocol handling of a list of un-normalised (T_i, 263) motions (`encode_motion`): each is
cut to at most max_motion_length = 196 frames, then down to a multiple of 4 (keeping the
first frames; the original picks a random window, which is moot for whole motions), z-
normalised with the evaluator's own mean/std, zero-padded (GuoEvaluator: always to 196
frames, exactly the protocol's batches), sorted by length (descending), encoded in batches
of 64 and returned in input order. Motions shorter than 4 frames are refused.

Original release layout accepted by `load_guo_evaluator(folder)` (the layout of the
T2M-GPT / MoMask "extractor" downloads; `folder` is their `checkpoints/` directory or the
repository root that contains `checkpoints/`):

    folder/t2m/text_mot_match/model/finest.tar      {'text_encoder', 'motion_encoder',
                                                      'movement_encoder', ...} state dicts
    folder/t2m/Comp_v6_KLD005/meta/mean.npy, std.npy  (263,) evaluator normalisation
        (Guo's own release for t2m uses Comp_v6_KLD01/meta: tried when KLD005 is absent)
    folder/glove/our_vab_data.npy                    (V, 300) float word vectors
    folder/glove/our_vab_words.pkl                   list of V words
    folder/glove/our_vab_idx.pkl                     dict word -> row
        (glove/ may also sit beside the checkpoints folder, as in those repositories)

The .pkl files are read by an unpickler that refuses every global reference, so only plain
lists/dicts/str/int/float can load; the checkpoint is read with torch.load(weights_only=True).

Public API:
    Evaluator (typing.Protocol): encode_text(captions) -> (N, 512), encode_motion(features) -> (N, 512)
    POS_ENUMERATOR (= POS_enumerator), VIP_WORDS, WordVectorizer(folder, prefix="our_vab")
    MovementConvEncoder, MotionEncoderBiGRUCo, TextEncoderBiGRUCo
    GuoEvaluator, load_guo_evaluator(folder, dataset="t2m", meta_name=None, device="cpu")
    EvaluatorConfig (.paper(), .embedded()), TextMotionEvaluator
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

if TYPE_CHECKING:  # pragma: no cover
    from backend.data.dataset import Caption
    from backend.data.text import MiniLMEncoder

from backend.checkpoints import WEIGHTS_NAME, load_folder, save_folder

UNIT_LENGTH = 4  # frames per movement token: fixed by the two stride-2 convs
MAX_MOTION_LENGTH = 196  # frames; the protocol's max_motion_length
MAX_TEXT_LEN = 20  # words before sos/eos are added
CONTACT_DIMS = 4  # trailing foot-contact dims that the motion side ignores
EMBED_DIM = 512
BATCH_SIZE = 64
DATASET_DIM_POSE = {"t2m": 263, "kit": 251}


# -----------------------------------------------------------------------------
# protocol


@runtime_checkable
class Evaluator(Protocol):
    """What metric code needs: captions and un-normalised motions -> (N, 512) float32 arrays."""

    def encode_text(self, captions: Sequence["Caption"]) -> np.ndarray: ...

    def encode_motion(self, features: Sequence[np.ndarray]) -> np.ndarray: ...


# -----------------------------------------------------------------------------
# GloVe word vectorizer of the protocol

POS_ENUMERATOR: dict[str, int] = {
    "VERB": 0, "NOUN": 1, "DET": 2, "ADP": 3, "NUM": 4, "AUX": 5, "PRON": 6, "ADJ": 7, "ADV": 8,
    "Loc_VIP": 9, "Body_VIP": 10, "Obj_VIP": 11, "Act_VIP": 12, "Desc_VIP": 13, "OTHER": 14,
}
POS_enumerator = POS_ENUMERATOR  # the original's name

# words whose POS one-hot is replaced by a "very important word" category (checked in this order)
VIP_WORDS: dict[str, tuple[str, ...]] = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back",
                "backward", "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee",
                 "shoulder", "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball",
                "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance",
                "jump", "turn", "stumble", "stop", "sit", "lift", "lower", "raise", "wash", "stand",
                "kneel", "stroll", "rub", "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate",
                "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad",
                 "happily", "angrily", "sadly"),
}
_VIP_OF: dict[str, str] = {}
for _cat, _words in VIP_WORDS.items():
    for _w in _words:
        _VIP_OF.setdefault(_w, _cat)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global (class/function) reference: only builtin containers,
    strings and numbers can come out of it."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only plain data is allowed")


def load_plain_pickle(path):
    """Load a pickle that may only hold plain lists/dicts/tuples/str/int/float."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _PlainDataUnpickler(fh).load()
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(f"{path}: {exc}") from None


class WordVectorizer:
    """GloVe vectors + POS one-hots for 'word/POS' tokens, as the Guo protocol builds them.

    A word in the vocabulary gets its vector and the one-hot of its VIP category if it is one
    of VIP_WORDS, else of its POS tag (tags outside POS_ENUMERATOR -> 'OTHER'). A word outside
    the vocabulary gets the 'unk' vector and the 'OTHER' one-hot.
    """

    def __init__(self, folder, prefix: str = "our_vab"):
        folder = Path(folder)
        paths = [folder / f"{prefix}_data.npy", folder / f"{prefix}_words.pkl", folder / f"{prefix}_idx.pkl"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"GloVe file(s) not found: {', '.join(missing)}")
        vectors = np.load(paths[0], allow_pickle=False)
        words = load_plain_pickle(paths[1])
        word2idx = load_plain_pickle(paths[2])
        if vectors.ndim != 2:
            raise ValueError(f"{paths[0]}: expected a (V, dim) array, got shape {vectors.shape}")
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{paths[1]}: expected a list of words")
        if not isinstance(word2idx, dict):
            raise ValueError(f"{paths[2]}: expected a dict word -> row index")
        self.word2vec: dict[str, np.ndarray] = {}
        for w in words:
            i = word2idx.get(w)
            if not isinstance(i, int) or not 0 <= i < len(vectors):
                raise ValueError(f"{paths[2]}: no valid row for word {w!r} (got {i!r}; {len(vectors)} vectors)")
            self.word2vec[w] = vectors[i].astype(np.float32)
        if "unk" not in self.word2vec:
            raise ValueError(f"{paths[1]}: the vocabulary has no 'unk' word")
        self.dim = int(vectors.shape[1])

    def __len__(self) -> int:
        return len(self.word2vec)

    def __contains__(self, word) -> bool:
        return word in self.word2vec

    @staticmethod
    def pos_onehot(pos: str) -> np.ndarray:
        vec = np.zeros(len(POS_ENUMERATOR), dtype=np.float32)
        vec[POS_ENUMERATOR.get(pos, POS_ENUMERATOR["OTHER"])] = 1.0
        return vec

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """'word/POS' -> (word vector (dim,), POS one-hot (15,)), float32."""
        word, sep, pos = token.rpartition("/")
        if not sep:
            word, pos = token, "OTHER"
        if word in self.word2vec:
            return self.word2vec[word], self.pos_onehot(_VIP_OF.get(word, pos))
        return self.word2vec["unk"], self.pos_onehot("OTHER")

    def encode(self, tokens: Sequence[str], max_text_len: int = MAX_TEXT_LEN):
        """Tokens -> (word_embs (max_text_len+2, dim), pos_ohot (max_text_len+2, 15), sent_len):
        sos + at most max_text_len tokens + eos, padded with 'unk/OTHER'."""
        seq = ["sos/OTHER", *list(tokens)[:max_text_len], "eos/OTHER"]
        sent_len = len(seq)
        seq += ["unk/OTHER"] * (max_text_len + 2 - sent_len)
        pairs = [self[t] for t in seq]
        return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), sent_len)


# -----------------------------------------------------------------------------
# modules (names and shapes as in the original networks/modules.py)


def _init_xavier(module: nn.Module):
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _co_embedding_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> LeakyReLU(0.2) -> Linear (indices 0, 1, 2, 3 as in the original)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, out_dim))


def _bigru_final_states(gru: nn.GRU, h0: torch.Tensor, x: torch.Tensor, lengths) -> torch.Tensor:
    """Run a bidirectional GRU over the first lengths[i] steps of x[i]; return [h_fwd, h_bwd] (B, 2H)."""
    lengths = torch.as_tensor(lengths).detach().to("cpu", torch.int64)
    if lengths.numel() != x.shape[0]:
        raise ValueError(f"{lengths.numel()} lengths for a batch of {x.shape[0]}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise ValueError(f"sequence lengths must lie in [1, {x.shape[1]}], got {lengths.tolist()}")
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    hidden = h0.expand(-1, x.shape[0], -1).contiguous()
    _, last = gru(packed, hidden)  # (2, B, H), back in input order
    return torch.cat([last[0], last[1]], dim=-1)


class MovementConvEncoder(nn.Module):
    """(B, T, input_size) -> (B, T // 4, output_size): two Conv1d(k=4, s=2, p=1) + LeakyReLU(0.2)
    (dropout 0.2 after each conv, a no-op in eval mode), then a per-token Linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, dropout: float = 0.2):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(dropout), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(dropout), nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        _init_xavier(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h = self.main(inputs.transpose(1, 2)).transpose(1, 2)
        return self.out_net(h)


class MotionEncoderBiGRUCo(nn.Module):
    """Movement tokens (B, N, input_size) + token counts (B,) -> (B, output_size)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_embedding_head(2 * hidden_size, hidden_size, output_size)
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))  # learned initial state
        _init_xavier(self.input_emb)
        _init_xavier(self.output_net)

    def forward(self, inputs: torch.Tensor, m_lens) -> torch.Tensor:
        return self.output_net(_bigru_final_states(self.gru, self.hidden, self.input_emb(inputs), m_lens))


class TextEncoderBiGRUCo(nn.Module):
    """Word vectors (B, L, word_size) + POS one-hots (B, L, pos_size) + lengths (B,) -> (B, output_size)."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_embedding_head(2 * hidden_size, hidden_size, output_size)
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))
        _init_xavier(self.pos_emb)
        _init_xavier(self.input_emb)
        _init_xavier(self.output_net)

    def forward(self, word_embs: torch.Tensor, pos_ohot: torch.Tensor, cap_lens) -> torch.Tensor:
        x = self.input_emb(word_embs + self.pos_emb(pos_ohot))
        return self.output_net(_bigru_final_states(self.gru, self.hidden, x, cap_lens))


# -----------------------------------------------------------------------------
# shared protocol-side motion batching


def _motion_batches(features: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray, *,
                    max_len: int = MAX_MOTION_LENGTH, pad_to_max: bool,
                    batch_size: int = BATCH_SIZE) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (indices, normalised zero-padded batch (b, T, D) float32, frame lengths (b,)),
    longest first. Each motion is cut to max_len frames and down to a multiple of UNIT_LENGTH."""
    if isinstance(features, np.ndarray) and features.ndim == 2:
        raise TypeError("encode_motion() takes a list of (T, D) arrays, not a single motion")
    dim = mean.shape[0]
    arrays, lengths = [], []
    for i, f in enumerate(features):
        a = np.asarray(f)
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"motion {i}: expected shape (T, {dim}), got {a.shape}")
        n = (min(len(a), max_len) // UNIT_LENGTH) * UNIT_LENGTH
        if n < UNIT_LENGTH:
            raise ValueError(f"motion {i}: {len(a)} frames; the evaluator needs at least {UNIT_LENGTH}")
        a = a[:n].astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"motion {i}: non-finite values")
        arrays.append(a)
        lengths.append(n)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    mean = mean.astype(np.float32)
    std = std.astype(np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        t = max(max_len, int(lengths[idx].max())) if pad_to_max else int(lengths[idx].max())
        x = np.zeros((len(idx), t, dim), dtype=np.float32)
        for j, k in enumerate(idx):
            x[j, :lengths[k]] = (arrays[k] - mean) / std
        yield idx, x, lengths[idx]


def _check_mean_std(mean, std, dim: int, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise ValueError(f"{where}mean/std must have shape ({dim},), got {mean.shape} and {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"{where}mean must be finite and std positive and finite")
    return mean, std


def _caption_tokens(c) -> Sequence[str]:
    tokens = getattr(c, "tokens", c)
    if isinstance(tokens, str) or not tokens:
        raise ValueError(f"GuoEvaluator needs captions with 'word/POS' tokens, got {c!r}")
    return tokens


# -----------------------------------------------------------------------------
# the published evaluator


class GuoEvaluator:
    """The Guo et al. text/motion feature extractors with their GloVe vectorizer and mean/std."""

    embed_dim = EMBED_DIM

    def __init__(self, text_encoder: TextEncoderBiGRUCo, motion_encoder: MotionEncoderBiGRUCo,
                 movement_encoder: MovementConvEncoder, word_vectorizer: WordVectorizer,
                 mean: np.ndarray, std: np.ndarray, device="cpu", batch_size: int = BATCH_SIZE):
        dim = movement_encoder.main[0].in_channels + CONTACT_DIMS
        self.mean, self.std = _check_mean_std(mean, std, dim, "evaluator ")
        self.dim_pose = dim
        self.text_encoder = text_encoder
        self.motion_encoder = motion_encoder
        self.movement_encoder = movement_encoder
        self.word_vectorizer = word_vectorizer
        self.batch_size = int(batch_size)
        self.to(device)

    def to(self, device) -> "GuoEvaluator":
        self.device = torch.device(device)
        for m in (self.text_encoder, self.motion_encoder, self.movement_encoder):
            m.to(self.device).eval()
        return self

    # tensor level, as the protocol's wrapper computes (but results come back in input order)
    @torch.no_grad()
    def text_embeddings(self, word_embs, pos_ohot, cap_lens) -> torch.Tensor:
        return self.text_encoder(word_embs.to(self.device).float(), pos_ohot.to(self.device).float(), cap_lens)

    @torch.no_grad()
    def motion_embeddings(self, motions: torch.Tensor, m_lens) -> torch.Tensor:
        """motions: (B, T, D) normalised, zero-padded; m_lens: (B,) frames (multiples of 4)."""
        motions = motions.to(self.device).float()
        m_lens = torch.as_tensor(m_lens).to("cpu", torch.int64)
        order = torch.argsort(m_lens, descending=True, stable=True)
        movements = self.movement_encoder(motions[order][..., :-CONTACT_DIMS])
        emb = self.motion_encoder(movements, m_lens[order] // UNIT_LENGTH)
        out = torch.empty_like(emb)
        out[order.to(emb.device)] = emb
        return out

    # protocol interface
    def encode_text(self, captions) -> np.ndarray:
        """Captions (their .tokens, 'word/POS') -> (N, 512) float32."""
        captions = list(captions)
        out = np.zeros((len(captions), EMBED_DIM), dtype=np.float32)
        for s in range(0, len(captions), self.batch_size):
            enc = [self.word_vectorizer.encode(_caption_tokens(c)) for c in captions[s:s + self.batch_size]]
            words = torch.from_numpy(np.stack([e[0] for e in enc]))
            pos = torch.from_numpy(np.stack([e[1] for e in enc]))
            lens = torch.tensor([e[2] for e in enc], dtype=torch.int64)
            out[s:s + len(enc)] = self.text_embeddings(words, pos, lens).cpu().numpy()
        return out

    def encode_motion(self, features) -> np.ndarray:
        """Un-normalised (T_i, D) motions -> (N, 512) float32, batches padded to 196 frames."""
        features = list(features)
        out = np.zeros((len(features), EMBED_DIM), dtype=np.float32)
        for idx, x, lens in _motion_batches(features, self.mean, self.std, pad_to_max=True,
                                            batch_size=self.batch_size):
            out[idx] = self.motion_embeddings(torch.from_numpy(x), torch.from_numpy(lens)).cpu().numpy()
        return out


GUO_CHECKPOINT = Path("text_mot_match") / "model" / "finest.tar"
GUO_META_NAMES = ("Comp_v6_KLD005", "Comp_v6_KLD01")
GLOVE_FILES = ("our_vab_data.npy", "our_vab_words.pkl", "our_vab_idx.pkl")


def _strict_load(module: nn.Module, state, where: str):
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a state dict, got {type(state).__name__}")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(getattr(state[k], 'shape', ()))} != {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state))
             if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if wrong:
            parts.append(f"shape mismatches {wrong}")
        raise ValueError(f"{where} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_guo_evaluator(folder, dataset: str = "t2m", meta_name: str | None = None,
                       device="cpu") -> GuoEvaluator:
    """Load the published extractor from a folder in the release layout (see the module docstring).

    folder: the `checkpoints/` directory (holding `t2m/`) or a repository root holding
    `checkpoints/t2m/`; glove/ is looked for in folder/, beside the checkpoints dir, and in
    folder's parent. meta_name: the folder whose meta/{mean,std}.npy normalise motions
    (default: Comp_v6_KLD005, else Comp_v6_KLD01).
    """
    if dataset not in DATASET_DIM_POSE:
        raise ValueError(f"dataset must be one of {sorted(DATASET_DIM_POSE)}, got {dataset!r}")
    folder = Path(folder)
    root = folder
    if not (folder / dataset).is_dir() and (folder / "checkpoints" / dataset).is_dir():
        root = folder / "checkpoints"
    ckpt = root / dataset / GUO_CHECKPOINT
    metas = [root / dataset / n / "meta" for n in ((meta_name,) if meta_name else GUO_META_NAMES)]
    meta = next((m for m in metas if (m / "mean.npy").is_file() and (m / "std.npy").is_file()), metas[0])
    gloves = list(dict.fromkeys([folder / "glove", root / "glove", root.parent / "glove", folder.parent / "glove"]))
    glove = next((g for g in gloves if all((g / f).is_file() for f in GLOVE_FILES)), gloves[0])
    required = [ckpt, meta / "mean.npy", meta / "std.npy", *(glove / f for f in GLOVE_FILES)]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError("Guo evaluator file(s) not found: " + ", ".join(missing))

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{ckpt}: expected a dict of state dicts, got {type(checkpoint).__name__}")
    absent = [k for k in ("text_encoder", "motion_encoder", "movement_encoder") if k not in checkpoint]
    if absent:
        raise ValueError(f"{ckpt}: missing entries {absent} (has {sorted(map(str, checkpoint))})")

    dim_pose = DATASET_DIM_POSE[dataset]
    movement = MovementConvEncoder(dim_pose - CONTACT_DIMS, 512, 512)
    text = TextEncoderBiGRUCo(word_size=300, pos_size=len(POS_ENUMERATOR), hidden_size=512, output_size=EMBED_DIM)
    motion = MotionEncoderBiGRUCo(input_size=512, hidden_size=1024, output_size=EMBED_DIM)
    _strict_load(movement, checkpoint["movement_encoder"], f"{ckpt}['movement_encoder']")
    _strict_load(text, checkpoint["text_encoder"], f"{ckpt}['text_encoder']")
    _strict_load(motion, checkpoint["motion_encoder"], f"{ckpt}['motion_encoder']")

    vectorizer = WordVectorizer(glove, "our_vab")
    if vectorizer.dim != 300:
        raise ValueError(f"{glove}: expected 300-d word vectors, got {vectorizer.dim}")
    mean = np.load(meta / "mean.npy", allow_pickle=False)
    std = np.load(meta / "std.npy", allow_pickle=False)
    _check_mean_std(mean, std, dim_pose, f"{meta}: ")
    return GuoEvaluator(text, motion, movement, vectorizer, mean, std, device=device)


# -----------------------------------------------------------------------------
# our embedded evaluator


@dataclass
class EvaluatorConfig:
    dim_pose: int = 263  # motion features (foot contacts = last 4 dims are dropped)
    dim_movement_enc_hidden: int = 512  # movement conv channels
    dim_movement_latent: int = 512  # movement token size
    dim_motion_hidden: int = 1024  # motion BiGRU hidden size (per direction)
    dim_text_in: int = 384  # MiniLM sentence embedding
    dim_text_hidden: int = 512  # text head hidden size
    dim_coemb: int = EMBED_DIM  # shared embedding size
    max_motion_length: int = MAX_MOTION_LENGTH  # protocol crop (frames)
    dropout: float = 0.2  # after each movement conv (training only)
    text_model: str = "all-MiniLM-L6-v2"  # informational: the frozen sentence encoder

    def __post_init__(self):
        if self.dim_pose <= CONTACT_DIMS:
            raise ValueError(f"dim_pose must exceed {CONTACT_DIMS}, got {self.dim_pose}")
        if self.max_motion_length < UNIT_LENGTH:
            raise ValueError(f"max_motion_length must be >= {UNIT_LENGTH}")
        for f in ("dim_movement_enc_hidden", "dim_movement_latent", "dim_motion_hidden", "dim_text_in",
                  "dim_text_hidden", "dim_coemb"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be positive")

    @classmethod
    def paper(cls) -> "EvaluatorConfig":
        """Motion side of the Guo et al. evaluator's sizes."""
        return cls()

    @classmethod
    def embedded(cls) -> "EvaluatorConfig":
        """Small config that trains on a 2-core CPU."""
        return cls(dim_movement_enc_hidden=256, dim_movement_latent=256, dim_motion_hidden=256,
                   dim_text_hidden=512)


class TextMotionEvaluator(nn.Module):
    """Frozen MiniLM + trainable text head; Guo-style movement/motion encoders; dataset mean/std buffers.

    Tensor level (training; gradients flow; dropout follows train()/eval()):
        encode_text_embeddings(minilm (N, 384)) -> (N, 512)
        encode_text(texts: list[str]) -> (N, 512) tensor
        encode_motion(motions (B, T, D) z-normalised, lengths (B,) frames) -> (B, 512) tensor
        forward(minilm, motions, lengths) -> (text (N, 512), motion (B, 512))
    Protocol level (`Evaluator`; eval mode, no grad, float32 numpy):
        encode_text(captions: list[Caption]) -> (N, 512)   (uses caption.text)
        encode_motion(features: list of un-normalised (T_i, D)) -> (N, 512)
    encode_text/encode_motion pick the level from their arguments (str items vs captions; a tensor
    plus lengths vs a list of arrays); encode_captions/encode_features are the explicit protocol forms.

    Motion embeddings do not depend on padding: frames at or past (length // 4) * 4 are zeroed and
    the batch always carries >= 4 zero frames after the longest motion.
    """

    embed_dim = EMBED_DIM

    def __init__(self, config: EvaluatorConfig | None = None, text_encoder: "MiniLMEncoder | None" = None):
        super().__init__()
        cfg = config or EvaluatorConfig.embedded()
        self.config = cfg
        self.text_head = _co_embedding_head(cfg.dim_text_in, cfg.dim_text_hidden, cfg.dim_coemb)
        _init_xavier(self.text_head)
        self.movement_encoder = MovementConvEncoder(cfg.dim_pose - CONTACT_DIMS, cfg.dim_movement_enc_hidden,
                                                    cfg.dim_movement_latent, cfg.dropout)
        self.motion_encoder = MotionEncoderBiGRUCo(cfg.dim_movement_latent, cfg.dim_motion_hidden, cfg.dim_coemb)
        self.register_buffer("mean", torch.zeros(cfg.dim_pose))
        self.register_buffer("std", torch.ones(cfg.dim_pose))
        self._text_model = text_encoder  # plain attribute: MiniLM is not part of this module's state

    # --- pieces -------------------------------------------------------------------

    @property
    def text_model(self) -> "MiniLMEncoder":
        """The frozen MiniLM (the shared process-wide instance, loaded on first use)."""
        if self._text_model is None:
            from backend.data.text import get_minilm

            self._text_model = get_minilm()
        return self._text_model

    def set_normalization(self, mean, std) -> "TextMotionEvaluator":
        """Store the dataset Mean/Std the evaluator is trained with (saved with the weights)."""
        mean, std = _check_mean_std(mean, std, self.config.dim_pose)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))
        return self

    def num_parameters(self) -> int:
        """Trainable parameters (MiniLM excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- tensor level -------------------------------------------------------------

    def encode_text_embeddings(self, minilm_emb: torch.Tensor) -> torch.Tensor:
        return self.text_head(minilm_emb.to(self.mean.device, torch.float32))

    def _motion_tensor(self, motions: torch.Tensor, lengths) -> torch.Tensor:
        if motions.ndim != 3 or motions.shape[-1] != self.config.dim_pose:
            raise ValueError(f"motions must be (B, T, {self.config.dim_pose}), got {tuple(motions.shape)}")
        x = motions[..., :-CONTACT_DIMS].to(self.mean.device, torch.float32)
        lengths = torch.as_tensor(lengths).to("cpu", torch.int64).reshape(-1)
        if lengths.numel() != x.shape[0]:
            raise ValueError(f"{lengths.numel()} lengths for {x.shape[0]} motions")
        if x.shape[0] == 0:
            return x.new_zeros(0, self.config.dim_coemb)
        if int(lengths.max()) > x.shape[1]:
            raise ValueError(f"a length ({int(lengths.max())}) exceeds the {x.shape[1]} frames given")
        tokens = lengths // UNIT_LENGTH
        if int(tokens.min()) < 1:
            raise ValueError(f"motions need at least {UNIT_LENGTH} frames, got lengths {lengths.tolist()}")
        frames = tokens * UNIT_LENGTH
        span = int(frames.max()) + UNIT_LENGTH  # every motion gets >= 4 zero frames after its end
        if x.shape[1] < span:
            x = torch.nn.functional.pad(x, (0, 0, 0, span - x.shape[1]))
        else:
            x = x[:, :span]
        keep = torch.arange(span) < frames[:, None]
        x = torch.where(keep[..., None].to(x.device), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return self.motion_encoder(self.movement_encoder(x), tokens)

    def forward(self, minilm_emb: torch.Tensor, motions: torch.Tensor, lengths):
        return self.encode_text_embeddings(minilm_emb), self._motion_tensor(motions, lengths)

    # --- dispatching entry points ----------------------------------------------------

    def encode_text(self, texts):
        """list[str] -> (N, 512) tensor (through MiniLM + head); list[Caption] -> (N, 512) numpy."""
        texts = list(texts)
        if all(isinstance(t, str) for t in texts):
            return self.encode_text_embeddings(self.text_model.encode(texts))
        return self.encode_captions(texts)

    def encode_motion(self, motions, lengths=None):
        """(B, T, D) normalised tensor + lengths -> (B, 512) tensor; list of un-normalised
        (T_i, D) arrays -> (N, 512) numpy (protocol level)."""
        if lengths is not None:
            if not isinstance(motions, torch.Tensor):
                motions = torch.as_tensor(np.asarray(motions), dtype=torch.float32)
            return self._motion_tensor(motions, lengths)
        if isinstance(motions, torch.Tensor):
            raise TypeError("encode_motion(tensor) needs lengths; for un-normalised motions pass a list of arrays")
        return self.encode_features(motions)

    # --- protocol level -----------------------------------------------------------

    def encode_captions(self, captions) -> np.ndarray:
        texts = [c if isinstance(c, str) else c.text for c in captions]
        with _eval_mode(self), torch.no_grad():
            out = self.encode_text_embeddings(self.text_model.encode(texts)) if texts else None
        return out.cpu().numpy().astype(np.float32) if out is not None else np.zeros((0, EMBED_DIM), np.float32)

    def encode_features(self, features) -> np.ndarray:
        features = list(features)
        out = np.zeros((len(features), self.config.dim_coemb), dtype=np.float32)
        mean = self.mean.detach().cpu().numpy()
        std = self.std.detach().cpu().numpy()
        with _eval_mode(self), torch.no_grad():
            for idx, x, lens in _motion_batches(features, mean, std, max_len=self.config.max_motion_length,
                                                pad_to_max=False):
                out[idx] = self._motion_tensor(torch.from_numpy(x), torch.from_numpy(lens)).cpu().numpy()
        return out

    # --- persistence --------------------------------------------------------------

    def save_pretrained(self, directory, dtype: torch.dtype | None = None):
        """config.json + model.safetensors (text head, motion side, mean/std; not MiniLM)."""
        save_folder(directory, self.state_dict(), self.config, dtype, keep_float32=("mean", "std"))

    @classmethod
    def from_pretrained(cls, directory, device="cpu", text_encoder: "MiniLMEncoder | None" = None,
                        load_text_model: bool = True) -> "TextMotionEvaluator":
        """Load a directory written by save_pretrained (eval mode); MiniLM comes from the package."""
        config, state = load_folder(directory, EvaluatorConfig, "TextMotionEvaluator")
        model = cls(config, text_encoder=text_encoder)
        _strict_load(model, state, str(Path(directory) / WEIGHTS_NAME))
        if load_text_model:
            model.text_model  # noqa: B018 - load MiniLM now rather than on first use
        return model.to(device).eval()


class _eval_mode:
    """Context manager: module in eval mode inside, previous train/eval state restored after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train(self.was_training)
        return False
