"""The fast GGUF metadata reader builds the same fields as gguf's own reader."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from backend.generation.gguf_fast import fast_gguf_loading, fast_reader  # noqa: E402


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_array("tokenizer.ggml.tokens", ["<pad>", "a", "bé", "", "▁hello"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.25, 3.0, 4.0])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1, 1])
    w.add_array("empty.list", [])
    w.add_bool("some.flag", True)
    w.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _fields(reader):
    return {name: (f.name, [int(t) for t in f.types], list(f.data),
                   [(p.dtype.str, p.tolist()) for p in f.parts]) for name, f in reader.fields.items()}


def test_fast_reader_matches_gguf_reader(small_gguf):
    slow, fast = gguf.GGUFReader(str(small_gguf)), fast_reader(str(small_gguf))
    assert _fields(fast) == _fields(slow)
    assert [t.name for t in fast.tensors] == [t.name for t in slow.tensors]
    np.testing.assert_array_equal(fast.tensors[0].data, slow.tensors[0].data)
    tokens = fast.fields["tokenizer.ggml.tokens"]
    assert [bytes(tokens.parts[i]).decode() for i in tokens.data] == ["<pad>", "a", "bé", "", "▁hello"]


def test_fast_loading_shares_one_reader_and_restores_everything(small_gguf):
    import transformers.modeling_gguf_pytorch_utils as tg

    before = (gguf.GGUFReader, tg.load_gguf_checkpoint)
    with fast_gguf_loading():
        from gguf import GGUFReader

        a, b = GGUFReader(str(small_gguf)), GGUFReader(small_gguf)
        assert a is b and _fields(a) == _fields(gguf.gguf_reader.GGUFReader(str(small_gguf)))
    assert (gguf.GGUFReader, tg.load_gguf_checkpoint) == before
    with pytest.raises(RuntimeError):
        with fast_gguf_loading():
            raise RuntimeError("boom")
    assert (gguf.GGUFReader, tg.load_gguf_checkpoint) == before
