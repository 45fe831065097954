"""The motion vocabulary of the motion language model.

Motion tokens form their own vocabulary, separate from the base LLM's text vocabulary
(they are never written as digits in text): ids ``0 .. K-1`` are the K codes of the
motion VQ-VAE, then three special tokens.

    id      meaning
    0..K-1  VQ-VAE code
    K       BOS  (starts the motion; the prompt's last input)
    K+1     EOS  (ends the motion; predicted after the last code)
    K+2     PAD  (fills finished sequences in a batch; never predicted)

Public API:
    MotionVocab(codebook_size): .size, .bos, .eos, .pad, .encode(codes), .decode(ids)
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class MotionVocab:
    """Motion token ids: the VQ-VAE codes plus BOS / EOS / PAD."""

    def __init__(self, codebook_size: int):
        k = int(codebook_size)
        if k < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.codebook_size = k
        self.bos = k
        self.eos = k + 1
        self.pad = k + 2

    @property
    def size(self) -> int:
        """Number of motion token ids (codes + BOS + EOS + PAD)."""
        return self.codebook_size + 3

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"MotionVocab(codebook_size={self.codebook_size})"

    def check_codes(self, codes) -> np.ndarray:
        """codes as a 1-D int64 array; ValueError unless every code is in [0, K)."""
        if hasattr(codes, "detach"):  # a torch tensor
            codes = codes.detach().cpu().numpy()
        arr = np.asarray(codes if isinstance(codes, np.ndarray) else list(codes))
        if arr.ndim != 1:
            raise ValueError(f"motion codes must be 1-D, got shape {arr.shape}")
        if arr.size and arr.dtype.kind not in "iu":
            if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"motion codes must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.codebook_size):
            bad = arr[(arr < 0) | (arr >= self.codebook_size)][:5].tolist()
            raise ValueError(f"motion codes must be in [0, {self.codebook_size}); got {bad}")
        return arr

    def encode(self, codes: Iterable[int]) -> list[int]:
        """codes -> [BOS, *codes, EOS]."""
        return [self.bos, *self.check_codes(codes).tolist(), self.eos]

    def decode(self, ids: Iterable[int]) -> np.ndarray:
        """token ids -> int64 codes: a leading BOS is dropped, everything from the first EOS on
        is dropped, PAD is skipped. ValueError on ids outside [0, size) or a BOS after the start."""
        if hasattr(ids, "detach"):
            ids = ids.detach().cpu().numpy()
        seq = np.asarray(ids).reshape(-1).tolist() if isinstance(ids, np.ndarray) else list(ids)
        out: list[int] = []
        for pos, t in enumerate(seq):
            t = int(t)
            if t < 0 or t >= self.size:
                raise ValueError(f"motion token id {t} at position {pos} is outside [0, {self.size})")
            if t == self.eos:
                break
            if t == self.pad:
                continue
            if t == self.bos:
                if pos == 0:
                    continue
                raise ValueError(f"BOS (id {self.bos}) at position {pos}: only allowed first")
            out.append(t)
        return np.asarray(out, dtype=np.int64)
