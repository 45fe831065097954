"""A complete, tiny, randomly initialised checkpoints folder for testing the app end to end.

``make_fake_checkpoints(root)`` writes the same layout the shipped ``checkpoints/`` folder has
once every component is trained::

    root/vqvae/, root/evaluator/       copied from the repository (real, small)
    root/retriever/                    Gemini-MVR, random weights, tiny widths
    root/videodb/                      12 synthetic database videos (real specs: they render),
                                       random keypoints / object features
    root/normalizer/Mean.npy, Std.npy  statistics of the 20 raw mocap clips (sane scales)
    root/llm-mcdpo/, root/llm-sft/     MotionLLMs on a tiny random Phi-3 (root/tiny-phi3/)

so that ``VIMORAG_CHECKPOINTS=root`` (plus a scratch ``VIMORAG_DATA``) makes
``VimoRAGPipeline.load()`` work in seconds. Nothing here is trained: outputs are random but
well-formed motions. ``python tests/fake_stack.py DIR`` writes one for manual use.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
N_VIDEOS = 12
MAX_MOTION_TOKENS = 12          # 48 frames (2.4 s): keeps rendering in tests short
VIDEO_SIZE, VIDEO_FRAMES = 160, 30   # database videos: 1.5 s at 160 px


class TinyCaptionedCorpus:
    """What ``training_parts`` reads of a corpus: programs, a split's ids, each id's captions
    (given as ``{mid: [text, ...]}``)."""

    class Caption:
        def __init__(self, text):
            self.text = text

    def __init__(self, programs: dict, captions: dict):
        self._programs, self._captions = programs, captions

    def programs(self):
        return self._programs

    def split_ids(self, split):
        return list(self._captions)

    def captions(self, mid):
        return [self.Caption(t) for t in self._captions[mid]]


def tiny_tokenizer(folder: Path, texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text, emoji included) trained on ``texts``, saved in
    ``folder`` with <pad>/<s>/</s> as ids 0/1/2; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.save_pretrained(folder)
    return tok


def _tiny_phi3(folder: Path) -> Path:
    """A tiny random Phi-3 causal LM + a byte-level BPE tokenizer (any text, emoji included)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    texts = ["a person does a cartwheel", "someone does a backflip", "a person crawls forward",
             "a man walks forward and turns around", "a woman jumps twice and kicks",
             "Write motion tokens for the described human motion", "Video: Text: Motion:"]
    tok = tiny_tokenizer(folder, texts * 4, 360)
    torch.manual_seed(0)
    cfg = Phi3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                     initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    Phi3ForCausalLM(cfg).save_pretrained(folder)
    return folder


def _normalizer(out: Path) -> None:
    """Mean/Std of the embedded corpus when it is built, else of the raw mocap clips."""
    out.mkdir(parents=True, exist_ok=True)
    from backend.checkpoints import REPO_ROOT

    built = REPO_ROOT / "data" / "embedded"
    if (built / "Mean.npy").is_file() and (built / "Std.npy").is_file():
        for f in ("Mean.npy", "Std.npy"):
            shutil.copy2(built / f, out / f)
        return
    from backend.data.mocap import load_base_clips
    from motioncore.features import joints_to_features, mean_std

    mean, std = mean_std([joints_to_features(c.clip.joints()) for c in load_base_clips()])
    np.save(out / "Mean.npy", mean)
    np.save(out / "Std.npy", std)


def _videodb(out: Path, n: int, seed: int = 0) -> None:
    from backend.retrieval.videos.ingest import spec_key
    from backend.retrieval.videos.synth import N_IN_DIST, make_spec

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # half in-distribution, half OOD (cartwheels, backflips, crawls, rolls) so both kinds show
    indices = list(range(n - n // 2)) + list(range(N_IN_DIST, N_IN_DIST + n // 2))
    records = []
    for i in indices:
        spec = make_spec(i).to_json()
        spec.update(size=VIDEO_SIZE, end=min(spec["end"], spec["start"] + VIDEO_FRAMES))  # cheap to render
        records.append({"id": spec["id"], "key": spec_key(spec), "source": "synthetic",
                        "kind": "synthetic", "person_fraction": 1.0, "fps": 20.0,
                        "n_frames": spec["end"] - spec["start"],
                        "duration": (spec["end"] - spec["start"]) / 20.0,
                        "width": spec["size"], "height": spec["size"], "spec": spec})
    kp = rng.uniform(-1, 1, size=(n, 16, 17, 3)).astype(np.float16)
    kp[..., 2] = 1.0                                             # confidences
    np.save(out / "keypoints.npy", kp)
    np.save(out / "object.npy", np.abs(rng.standard_normal((n, 1024))).astype(np.float16))
    (out / "videos.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def make_fake_checkpoints(root: Path) -> Path:
    """Fabricate a complete small checkpoints folder at ``root`` (see the module docstring)."""
    import torch

    from backend.generation.motion_llm import MotionLLM, MotionLLMConfig
    from backend.retrieval.model import GeminiMVR, RetrieverConfig

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("vqvae", "evaluator"):
        shutil.copytree(REPO / "checkpoints" / name, root / name, dirs_exist_ok=True)
    torch.manual_seed(0)
    rcfg = RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16)
    GeminiMVR(rcfg).save_pretrained(root / "retriever")
    _videodb(root / "videodb", N_VIDEOS)
    _normalizer(root / "normalizer")
    base = _tiny_phi3(root / "tiny-phi3")
    cfg = MotionLLMConfig.phi3(base, codebook_size=256, action_dim=rcfg.embed_dim,
                               object_dim=rcfg.embed_dim, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                               max_motion_tokens=MAX_MOTION_TOKENS, max_text_tokens=48)
    for i, name in enumerate(("mcdpo", "sft")):
        torch.manual_seed(10 + i)                # two different "trained" models
        llm = MotionLLM(cfg)
        with torch.no_grad():                    # peaky output logits: the two models differ visibly
            llm.motion_head.weight.normal_(0.0, 2.0)
        llm.save_pretrained(root / f"llm-{name}")
    (root / "FAKE").write_text("random weights for tests (tests/fake_stack.py); not a trained model\n")
    return root


# ------------------------------------------------------------------------ app server for tests
def real_stack_requested() -> bool:
    """``VIMORAG_APP_REAL=1``: run the app tests against the shipped checkpoints instead."""
    return os.environ.get("VIMORAG_APP_REAL", "") not in ("", "0", "false", "no")


def real_stack_missing() -> list[str]:
    ck = REPO / "checkpoints"
    need = ["retriever/model.safetensors", "videodb/videos.jsonl", "vqvae/model.safetensors",
            "evaluator/model.safetensors"]
    missing = [n for n in need if not (ck / n).is_file()]
    if not any((ck / f"llm-{m}" / "model.safetensors").is_file() for m in ("mcdpo", "sft")):
        missing.append("llm-mcdpo/ or llm-sft/")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``python launch.py`` in a subprocess on a free port (its output goes to a log file)."""

    def __init__(self, env: dict, workdir: Path, args=("--render-size", "160", "--threads", "1")):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(workdir) / f"app-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "launch.py"), "--port", str(self.port),
                                      *args], cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 240.0) -> str:
        """Wait for the page, then for the models; returns the status line."""
        import urllib.request

        t_end = time.time() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"the app exited (rc {self.proc.returncode}):\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.url, timeout=5).read(100)
                break
            except OSError:
                if time.time() > t_end:
                    raise TimeoutError(f"the app did not start in {timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.5)
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        while True:
            status = client.predict(api_name="/status")[0]
            if "Ready" in status:
                return status
            if "could not be loaded" in status or time.time() > t_end:
                raise RuntimeError(f"models not ready: {status}\n{self.log_tail()}")
            time.sleep(1.0)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


_SHARED: dict = {}


def shared_app_server() -> AppServer:
    """One app server per test session (shared by test_app.py and test_app_browser.py): the
    fake stack by default, the shipped checkpoints with VIMORAG_APP_REAL=1. Stopped and cleaned
    up when the test process exits."""
    srv = _SHARED.get("server")
    if srv is not None and srv.alive():
        return srv
    work = Path(tempfile.mkdtemp(prefix="vimorag-apptest-"))
    atexit.register(shutil.rmtree, work, True)
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl", "GRADIO_ANALYTICS_ENABLED": "False",
           "TMPDIR": str(work / "tmp"), "GRADIO_TEMP_DIR": str(work / "gradio")}
    (work / "tmp").mkdir()
    args = ["--render-size", "160", "--threads", "1", "--no-warm-previews"]   # tests count renders
    if not real_stack_requested():
        env["VIMORAG_CHECKPOINTS"] = str(make_fake_checkpoints(work / "checkpoints"))
        env["VIMORAG_DATA"] = str(work / "data")
    else:   # the shipped models, but a scratch copy of the database (tests upload videos into it)
        from backend.retrieval.videos.database import database_dir

        name = f"apptest-{os.getpid()}"
        db = database_dir(name)
        db.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, db, True)
        for f in ("keypoints.npy", "object.npy", "videos.jsonl"):
            shutil.copy2(REPO / "checkpoints" / "videodb" / f, db / f)
        args += ["--db", name]
    srv = AppServer(env, work, args)
    atexit.register(srv.stop)
    _SHARED["server"] = srv
    _SHARED["status"] = srv.wait_ready(900 if real_stack_requested() else 240)
    return srv


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/fake_stack.py OUT_DIR")
    sys.path.insert(0, str(REPO))
    print(make_fake_checkpoints(Path(sys.argv[1])))
