"""Faster first-use conversion of the packaged GGUF: read its metadata once, quickly.

Converting the Gemma GGUF with transformers (``AutoTokenizer`` + ``AutoModelForCausalLM`` with
``gguf_file=``) parses the file's metadata four times (config for the tokenizer, the tokenizer,
config for the model, the model), and each parse walks the 262k-entry vocabulary (tokens, scores,
token types) one element at a time through ``gguf.GGUFReader``: about 85 % of the conversion.

``fast_gguf_loading()`` is a context manager for that conversion:
- ``FastGGUFReader`` builds the same fields as ``GGUFReader`` (same parts, indices and types,
  tested), but reads an array of numbers as one view and an array of strings with a plain loop;
- inside the block every ``GGUFReader(path)`` of one file returns the same reader, and the
  metadata-only ``load_gguf_checkpoint(path)`` is computed once per file (callers get copies).
Nothing is patched outside the block.
"""
from __future__ import annotations

import copy
import struct
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_PATCH_LOCK = threading.Lock()


def _reader_class():
    from gguf.constants import GGUFValueType
    from gguf.gguf_reader import GGUFReader

    class FastGGUFReader(GGUFReader):
        """``GGUFReader`` whose arrays are parsed in bulk (same fields as the original)."""

        def _get_field_parts(self, orig_offs, raw_type):
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            offs = orig_offs
            raw_itype = self._get(offs, np.uint32)
            alen = self._get(offs + raw_itype.nbytes, np.uint64)
            offs += int(raw_itype.nbytes + alen.nbytes)
            n, itype = int(alen[0]), GGUFValueType(raw_itype[0])
            types = [GGUFValueType.ARRAY, itype]
            nptype = self.gguf_scalar_to_np.get(itype)
            if n and nptype is not None:                 # numbers: one view, one row per element
                arr = self._get(offs, nptype, n).view(type=np.ndarray)
                return (offs + int(arr.nbytes) - orig_offs, [raw_itype, alen, *arr.reshape(n, 1)],
                        list(range(2, 2 + n)), types)
            if n and itype == GGUFValueType.STRING:      # strings: (length, bytes) per element
                data = self.data.view(type=np.ndarray)   # plain views: memmap slicing is slower
                unpack = struct.Struct("<Q" if self._little_endian() else ">Q").unpack_from
                starts, lens = [], []
                for _ in range(n):                       # the lengths chain: a plain loop
                    (length,) = unpack(data, offs)
                    starts.append(offs + 8)
                    lens.append(length)
                    offs += 8 + length
                slens = np.array(lens, dtype=np.dtype(np.uint64).newbyteorder(self.byte_order)).reshape(n, 1)
                parts = [raw_itype, alen]
                for slen, a, length in zip(slens, starts, lens):
                    parts += (slen, data[a:a + length])
                return offs - orig_offs, parts, list(range(3, 2 + 2 * n, 2)), types
            return super()._get_field_parts(orig_offs, raw_type)   # empty or nested arrays

        def _little_endian(self) -> bool:
            swapped = self.byte_order == "S"
            return (sys.byteorder == "little") != swapped

    return FastGGUFReader


def fast_reader(path):
    """A ``FastGGUFReader`` of ``path``."""
    return _reader_class()(path)


@contextmanager
def fast_gguf_loading():
    """Within the block, transformers' GGUF loading reads each file's metadata once, fast."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as tg

    cls = _reader_class()
    readers: dict = {}
    metadata: dict = {}
    original_reader, original_load = gguf.GGUFReader, tg.load_gguf_checkpoint

    def reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = cls(path, mode)
        return readers[key]

    def load(path, return_tensors=False, **kwargs):
        if return_tensors or any(v is not None for v in kwargs.values()):
            return original_load(path, return_tensors=return_tensors, **kwargs)
        key = str(Path(path).resolve())
        if key not in metadata:
            metadata[key] = original_load(path, return_tensors=False)
        return copy.deepcopy(metadata[key])

    with _PATCH_LOCK:
        gguf.GGUFReader, tg.load_gguf_checkpoint = reader, load
        try:
            yield
        finally:
            gguf.GGUFReader, tg.load_gguf_checkpoint = original_reader, original_load


__all__ = ["fast_gguf_loading", "fast_reader"]
