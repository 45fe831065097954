"""Cold start: the command line answers --help without the heavy libraries (torch,
transformers, peft, gradio, the renderer). One short subprocess each, no timing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "gradio", "pyrender", "cv2")


def _modules_after(code: str) -> dict:
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["bench", "--help"],
                                  ["export", "--help"]])
def test_help_imports_no_heavy_library(argv):
    code = ("from backend.cli import build_parser\n"
            f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert not any(loaded.values()), loaded


def _tiny_tokenizer_folder(tmp_path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for w in ("▁a", "▁person", "▁walks", "▁forward", "a", "p", "e", "r", "s", "o", "n", "▁", "w",
              "l", "k", "f", "d", "<start_of_turn>", "<end_of_turn>"):
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True))
    tk.add_special_tokens(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"])
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    tk.decoder = decoders.Replace("▁", " ")
    d = tmp_path / "tok"
    d.mkdir()
    tk.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"backend": "tokenizers", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
         "pad_token": "<pad>", "mask_token": "<mask>", "model_max_length": 4096}))
    return d


def test_base_tokenizer_is_read_once_and_matches_autotokenizer(tmp_path, monkeypatch):
    import tokenizers
    from transformers import AutoTokenizer

    from backend.generation import motion_llm

    d = _tiny_tokenizer_folder(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    parses = []
    orig = tokenizers.Tokenizer.from_file
    monkeypatch.setattr(tokenizers.Tokenizer, "from_file",
                        staticmethod(lambda *a, **k: parses.append(a) or orig(*a, **k)))
    tok = motion_llm.load_base_tokenizer(d)
    assert motion_llm.load_base_tokenizer(str(d)) is tok          # cached per process
    assert len(parses) == 1
    for text in ("a person walks forward", "<start_of_turn>a person<end_of_turn>", "", "zzz walks"):
        for special in (False, True):
            assert tok(text, add_special_tokens=special)["input_ids"] == \
                ref(text, add_special_tokens=special)["input_ids"]
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(tok, attr) == getattr(ref, attr)
    assert len(tok) == len(ref) and tok.padding_side == "left"
    assert tok.convert_tokens_to_ids("<start_of_turn>") == ref.convert_tokens_to_ids("<start_of_turn>")


def test_embedded_base_tokenizer_matches_autotokenizer_once_converted():
    """The packaged Gemma base as the app gets it (converted on first use: here, if no test
    before did)."""
    from backend.generation import motion_llm

    motion_llm.load_base(motion_llm.EMBEDDED)          # converts once per machine, cached per process
    d = motion_llm.embedded_base_dir()
    assert (d / "tokenizer.json").is_file()
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    tok = motion_llm.load_base_tokenizer(motion_llm.EMBEDDED)
    for text in ("a person walks forward, then turns left", "<start_of_turn>user\nText: jumps<end_of_turn>\n",
                 "  ünïcødé 日本語 🙂\ttabs"):
        assert tok(text, add_special_tokens=False)["input_ids"] == ref(text, add_special_tokens=False)["input_ids"]
        assert tok(text)["input_ids"] == ref(text)["input_ids"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok)) == \
        (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id, len(ref))
    assert tok.convert_tokens_to_ids("<start_of_turn>") == ref.convert_tokens_to_ids("<start_of_turn>")


def test_load_base_reads_its_tokenizer_through_the_cache(tmp_path):
    """A local base folder: load_base takes the cached tokenizer (and does not deadlock on the
    base lock it holds while loading)."""
    import threading

    from backend.generation import motion_llm

    d = _tiny_tokenizer_folder(tmp_path)
    (d / "config.json").write_text("{}")
    tok = motion_llm.load_base_tokenizer(d)
    got = {}

    def load():
        with motion_llm._BASE_LOCK:          # as load_base holds it around the embedded load
            got["tok"] = motion_llm.load_base_tokenizer(d)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "load_base_tokenizer deadlocked under the base lock"
    assert got["tok"] is tok
