"""`generate` checks the request before loading any model (loading takes a minute)."""
import pytest

from backend.cli import main


@pytest.fixture
def no_loading(monkeypatch):
    from backend.pipeline import VimoRAGPipeline

    def refuse(*a, **k):
        raise AssertionError("models were loaded before the request was checked")

    monkeypatch.setattr(VimoRAGPipeline, "load", classmethod(lambda cls, *a, **k: refuse()))


@pytest.mark.parametrize("extra, message", [
    (["\u200b\u200b"], "empty"),                               # zero-width characters only
    (["   "], "empty"),
    (["a person walks", "--seed", "-1"], "seed must be between 0 and 2147483647"),
    (["a person walks", "--seed", str(2 ** 31)], "seed must be between"),
    (["a person walks", "--temperature", "0"], "temperature must be between 0.05 and 5"),
    (["a person walks", "--top-k", "-3"], "top-k must be 0"),
    (["a person walks", "--guidance", "-0.5"], "text guidance must be between 0"),
    (["a person walks", "--formats", "bvh,obj"], "unknown export format obj"),
])
def test_bad_requests_fail_before_loading(tmp_path, capsys, no_loading, extra, message):
    assert main(["generate", *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_unwritable_out_fails_before_loading(tmp_path, capsys, no_loading, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "a person walks", "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os
        if os.geteuid() == 0:                     # root writes anywhere: refuse the probe file instead
            import tempfile

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
        assert main(["generate", "a person walks", "--out", str(locked / "sub")]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_train_vqvae_refuses_bad_device_and_frozen_without_init(capsys):
    import torch

    from backend.cli import main

    if not torch.cuda.is_available():
        assert main(["train", "vqvae", "--device", "cuda", "--steps", "1"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["train", "vqvae", "--freeze-codebook", "--steps", "1"]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["train", "vqvae", "--extra-ood", "-5", "--steps", "1"]) == 2
    assert "--extra-ood" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--self-video", "0.8", "--random-video", "0.3"],
                                   ["--drop-video", "1.5", "--self-video", "0"],
                                   ["--caption-drop", "-0.1"], ["--mirror", "1.5"]])
def test_train_sft_refuses_bad_shares_before_loading(monkeypatch, capsys, extra):
    import backend.cli.train as train

    monkeypatch.setattr(train, "load_stack", lambda *a, **k: pytest.fail("loaded the data first"))
    assert main(["train", "sft", "--steps", "1", *extra]) == 2
    assert "shares must lie in [0, 1]" in capsys.readouterr().err


def test_train_sft_extra_train_needs_the_split(monkeypatch, capsys, tmp_path):
    import backend.cli.train as train
    import backend.generation.train_llm as train_llm

    class Corpus:
        root = tmp_path

        def splits(self):
            return ["train", "val", "test"]

    monkeypatch.setattr(train, "load_stack", lambda *a, **k: (Corpus(), None, None))
    monkeypatch.setattr(train_llm, "build_examples", lambda *a, **k: [])
    args = ["train", "sft", "--steps", "1", "--video", "none", "--workdir", str(tmp_path / "w")]
    assert main(args + ["--extra-train"]) == 2
    assert "no train_extra split" in capsys.readouterr().err


def test_eval_sides_checks_its_arguments_before_reading_anything(tmp_path, capsys):
    assert main(["eval", "sides", "--limit", "-1"]) == 2
    assert "--limit must be 0" in capsys.readouterr().err
    assert main(["eval", "sides", "--retriever", str(tmp_path / "missing")]) != 0
    assert "not a Gemini-MVR retriever directory" in capsys.readouterr().err


def test_eval_retrieval_refuses_a_negative_rerank_weight_before_loading(monkeypatch, capsys):
    import backend.retrieval.model as model

    monkeypatch.setattr(model.GeminiMVR, "from_pretrained",
                        classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(AssertionError("loaded"))))
    assert main(["eval", "retrieval", "--rerank-weight", "-0.1"]) == 2
    assert "--rerank-weight must be 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--stretch", "0"], ["--stretch", "1.2", "9"], ["--steps", "0"],
                                   ["--dropout", "1"], ["--noise", "-0.1"]])
def test_train_pose_reader_refuses_bad_options_before_loading(monkeypatch, extra):
    import backend.retrieval.service as service

    monkeypatch.setattr(service.VideoRetriever, "open", classmethod(lambda cls, *a, **k: pytest.fail("loaded")))
    with pytest.raises(SystemExit, match="--stretch factors must lie in"):
        main(["train", "pose-reader", *extra])


def test_eval_video_reading_names_a_missing_reader(tmp_path):
    with pytest.raises(SystemExit, match="no pose reader in"):
        main(["eval", "video-reading", "--reader", str(tmp_path / "none")])


@pytest.mark.parametrize("cmd", ["follow", "generation"])
@pytest.mark.parametrize("value,msg", [("-0.1", "must be 0 or more"), ("x", "not a number")])
def test_a_bad_tempo_margin_is_refused_before_loading(capsys, cmd, value, msg):
    with pytest.raises(SystemExit):
        main(["eval", cmd, "--tempo-margin", value])
    assert msg in capsys.readouterr().err


def test_negative_reader_drafts_are_refused():
    from backend.evaluation.rows import with_sampling

    with pytest.raises(ValueError, match="reader_drafts must be >= 0"):
        with_sampling([], reader_drafts=-1)


@pytest.mark.parametrize("extra,msg", [(["--seed", "7", "--ship"], "--ship copies the embedded database"),
                                       (["--in-dist", "0", "--ood", "0"], "nothing to build"),
                                       (["--ood", "-1"], "must be >= 0")])
def test_videos_build_refuses_bad_options_before_rendering(monkeypatch, extra, msg):
    import backend.retrieval.videos.ingest as ingest

    monkeypatch.setattr(ingest, "build_embedded", lambda *a, **k: pytest.fail("rendered"))
    with pytest.raises(SystemExit, match=msg):
        main(["videos", "build", *extra])


def test_videos_of_another_seed_have_their_own_ids_and_the_cli_default_is_the_embedded_seed():
    import argparse

    from backend.cli import videos
    from backend.data.video_motions import VIDEO_SEED
    from backend.retrieval.videos.synth import make_spec

    assert make_spec(3, n_in_dist=0).id == "emb00003"
    other = make_spec(3, seed=777, n_in_dist=0)
    assert other.id == "s777-00003" and other.ood and other.seed == 777
    p = argparse.ArgumentParser()
    videos.add(p.add_subparsers())
    assert p.parse_args(["videos", "build"]).seed == VIDEO_SEED


def test_a_missing_picker_folder_is_named(tmp_path):
    from backend.evaluation.rows import with_sampling

    with pytest.raises(FileNotFoundError, match="picking needs a picker .*none"):
        with_sampling([], pick=4, picker_dir=str(tmp_path / "none"))


def test_train_appearance_checks_its_retriever_before_reading_the_database(monkeypatch, capsys, tmp_path):
    import backend.cli.train as train_cli
    from backend.retrieval.model import GeminiMVR, RetrieverConfig

    monkeypatch.setattr(train_cli, "training_db", lambda args: pytest.fail("read the database first"))
    assert main(["train", "appearance", "--init", str(tmp_path / "none"), "--steps", "1"]) == 2
    assert "no trained retriever" in capsys.readouterr().err
    GeminiMVR(RetrieverConfig()).add_appearance().save_pretrained(tmp_path / "done")
    assert main(["train", "appearance", "--init", str(tmp_path / "done"), "--steps", "1"]) == 2
    assert "already reads appearance words" in capsys.readouterr().err
