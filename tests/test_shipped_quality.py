"""The shipped VQ-VAE on the embedded corpus: the figures the README reports, as floors that a
regression would break (README: root-aligned MPJPE 91 mm on test, 89 % of codes in use)."""
from backend.eval.vqvae import evaluate_split
from backend.models.vqvae import MotionVQVAE
from backend.paths import checkpoints_dir


def test_shipped_vqvae_reconstructs_the_test_split(embedded_corpus):
    model = MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae")
    r = evaluate_split(model, embedded_corpus, "test")
    assert r["motions"] == 495
    assert r["mpjpe_root_aligned_mm"] < 110
    assert r["codes_used_fraction"] >= 0.5, "at least half of the codebook in use"
    assert r["perplexity"] > 100
