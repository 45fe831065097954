"""Contact sheets: a few evenly spaced frames of each motion as stick figures in one PNG, to
look at many motions at a glance (``eval look``). Each row is drawn in the vertical plane
through the pelvis' largest horizontal travel (a cartwheel from the front, a walk or a backflip
from the side), on a shared floor line; the body's left side is blue, its right side red."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from motioncore.io import atomic_write_bytes
from motioncore.skeleton import KINEMATIC_CHAINS, NUM_JOINTS

LEFT_CHAINS = (1, 4)    # KINEMATIC_CHAINS: left leg, left arm (right leg 0, spine 2, right arm 3)
RIGHT_CHAINS = (0, 3)


def _view_axis(joints: np.ndarray) -> np.ndarray:
    """Unit horizontal axis of the drawing plane: the principal direction of the pelvis'
    horizontal path (x when it hardly moves)."""
    xz = joints[:, 0, [0, 2]] - joints[:, 0, [0, 2]].mean(0)
    if np.abs(xz).max() < 0.05:
        return np.array([1.0, 0.0, 0.0])
    _, _, vt = np.linalg.svd(xz, full_matrices=False)
    return np.array([vt[0, 0], 0.0, vt[0, 1]])


def contact_sheet(rows: list[tuple[str, np.ndarray]], path, frames: int = 8, dpi: int = 80) -> Path:
    """Write a PNG with one row per (title, joints (T, 22, 3)) and ``frames`` frames each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("a contact sheet needs at least one motion")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    fig, axes = plt.subplots(len(rows), frames, figsize=(2.0 * frames, 2.4 * len(rows)), squeeze=False)
    for i, (title, joints) in enumerate(rows):
        j = np.asarray(joints, dtype=np.float64)
        if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"{title!r}: expected joints (frames, {NUM_JOINTS}, 3), got {j.shape}")
        axis = _view_axis(j)
        h = (j - j[0, 0]) @ axis                  # (T, 22) horizontal coordinate in the plane
        for k, t in enumerate(np.linspace(0, len(j) - 1, frames).round().astype(int)):
            ax = axes[i, k]
            ax.set_axis_off()
            centre = h[t, 0]
            for c, chain in enumerate(KINEMATIC_CHAINS):
                colour = "tab:blue" if c in LEFT_CHAINS else "tab:red" if c in RIGHT_CHAINS else "0.3"
                ax.plot(h[t, list(chain)] - centre, j[t, list(chain), 1], color=colour, lw=1.6)
            ax.axhline(0.0, color="0.7", lw=0.8)
            ax.set_xlim(-1.0, 1.0)
            ax.set_ylim(-0.1, 2.1)
            ax.set_aspect("equal")
            ax.text(0.02, 0.02, f"{t / 20:.1f} s  x {h[t, 0]:+.1f} m", transform=ax.transAxes, fontsize=7)
            if k == 0:
                ax.set_title(title[:60], fontsize=9, loc="left")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png.getvalue())      # never a half-written sheet
    return path
