"""End to end through the ``vqkit`` command: train -> eval -> encode -> decode -> export -> load, resume after a
kill, 2-process DDP, and bad inputs. Tiny configs (digits, synthetic clusters, a few seconds of speech)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vqkit
from tests.conftest import tiny_codec as make_tiny_codec
from vqkit.cli import main
from vqkit.train.files import read_codes
from vqkit.train.run import load_run_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TINY = ["train.log_every=5", "train.tensorboard=false", "train.progress=false", "eval.max_items=64"]


def vqkit_cmd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in a fresh process (as a user would), with the repository's src on the path."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vqkit.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=600,
    )


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    latest = sorted((run / "checkpoints").glob("step_*"))[-1]
    return load_file(str(latest / "model.safetensors"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "digits"
    code = main(
        [
            "train",
            str(CONFIGS / "digits.yaml"),
            *TINY,
            "train.steps=30",
            "train.eval_every=15",
            "train.checkpoint_every=15",
            "--run-dir",
            str(run),
        ]
    )
    assert code == 0
    return run


def test_train_writes_a_complete_run(digits_run: Path) -> None:
    names = {p.name for p in digits_run.iterdir()}
    assert {
        "config.yaml",
        "data.json",
        "metrics.csv",
        "checkpoints",
        "eval.json",
        "report.md",
        "plots",
    } <= names
    result = json.loads((digits_run / "eval.json").read_text())
    metrics = result["metrics"]
    assert result["split"] == "test" and metrics["items"] == 64
    assert (
        0 < metrics["codebook/utilization"] <= 1 and metrics["bits_per_item"] == 16 * 6
    )  # 4x4 latents, 64 codes
    assert np.isfinite(metrics["mse"]) and np.isfinite(metrics["psnr"])
    report = (digits_run / "report.md").read_text()
    for plot in ("curves.png", "utilization.png", "pca.png", "reconstructions.png"):
        assert (digits_run / "plots" / plot).stat().st_size > 1000, plot
        assert f"plots/{plot}" in report
    assert "train.steps" not in report and "steps: 30" in report  # the resolved config is recorded


def test_encode_decode_export_load_round_trip(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    images = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)).save(path)
        images.append(str(path))
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(digits_run), *images, "-o", str(codes)]) == 0
    assert "96 bits" in capsys.readouterr().out
    out_dir = tmp_path / "decoded"
    assert main(["decode", str(digits_run), str(codes), "-o", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "img0.png",
        "img1.png",
        "img2.png",
        "vqkit-decode.json",
    ]
    exported = tmp_path / "tokenizer"
    assert main(["export", str(digits_run), str(exported)]) == 0
    tokenizer = vqkit.load_tokenizer(exported)
    run_model, _ = load_run_model(digits_run)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(tokenizer.decode(tokenizer.encode(x)), run_model(x).reconstruction)
    # Decoding with the exported tokenizer gives the same files as with the run.
    again = tmp_path / "decoded_again"
    assert main(["decode", str(exported), str(codes), "-o", str(again)]) == 0
    for name in ("img0.png", "img1.png"):
        assert (again / name).read_bytes() == (out_dir / name).read_bytes()
    assert main(["info", str(digits_run)]) == 0
    assert "bits per item" in capsys.readouterr().out


def write_images(folder: Path, *names: str) -> list[str]:
    from PIL import Image

    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(10 + i).random((8, 8)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_decode_gives_inputs_of_one_name_one_file_each(digits_run: Path, tmp_path: Path) -> None:
    a, b = write_images(tmp_path, "a/x.png", "b/x.png")
    assert main(["encode", str(digits_run), a, b, "-o", str(tmp_path / "codes.npz")]) == 0
    assert main(["decode", str(digits_run), str(tmp_path / "codes.npz"), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vqkit-decode.json", "x-0.png", "x-1.png"]
    for i, source in enumerate((a, b)):  # each file is its own input's decoding, in command-line order
        assert main(["encode", str(digits_run), source, "-o", str(tmp_path / f"one{i}.npz")]) == 0
        assert (
            main(["decode", str(digits_run), str(tmp_path / f"one{i}.npz"), "-o", str(tmp_path / f"one{i}")])
            == 0
        )
        assert (tmp_path / f"one{i}" / "x.png").read_bytes() == (tmp_path / "out" / f"x-{i}.png").read_bytes()


def test_decode_never_deletes_a_users_file(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(digits_run), *write_images(tmp_path, "img.png"), "-o", str(codes)]) == 0
    out = tmp_path / "out"
    assert main(["decode", str(digits_run), str(codes), "-o", str(out)]) == 0
    assert main(["decode", str(digits_run), str(codes), "-o", str(out)]) == 0  # its own output: replaced
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["decode", str(digits_run), str(codes), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "-o/--output: expected a new or empty folder or one written by vqkit decode" in err
    assert f"{str(out)!r} holding 'notes.txt'; pass --force" in err
    assert main(["decode", str(digits_run), str(codes), "-o", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "notes.txt", "vqkit-decode.json"]
    assert (out / "notes.txt").read_text() == "mine"
    (out / "img.png").write_bytes(b"edited")  # no longer the file decode wrote: kept even with --force
    assert main(["decode", str(digits_run), str(codes), "-o", str(out), "--force"]) == 1
    assert (
        "img.png' was not written by vqkit decode, and --force replaces only its own"
        in capsys.readouterr().err
    )
    assert (out / "img.png").read_bytes() == b"edited"


def test_export_never_deletes_a_users_file(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(digits_run), str(out)]) == 1
    err = capsys.readouterr().err
    assert "output: expected a new or empty folder or one written by save_tokenizer" in err
    assert f"{str(out)!r} holding 'notes.txt'; pass --force" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["export", str(digits_run), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt", "weights.safetensors"]
    assert (out / "notes.txt").read_text() == "mine"
    vqkit.load_tokenizer(out)
    clean = tmp_path / "clean"
    assert main(["export", str(digits_run), str(clean)]) == 0
    assert main(["export", str(digits_run), str(clean)]) == 0  # its own earlier export: replaced


def test_encode_replaces_only_a_codes_archive(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (image,) = write_images(tmp_path, "img.png")
    before = Path(image).read_bytes()
    capsys.readouterr()
    assert main(["encode", str(digits_run), image, "-o", image]) == 1
    assert "-o/--output: " in capsys.readouterr().err and Path(image).read_bytes() == before
    codes = str(tmp_path / "codes.npz")
    assert main(["encode", str(digits_run), image, "-o", codes]) == 0
    assert main(["encode", str(digits_run), image, "-o", codes]) == 0


def test_resume_after_a_kill_reaches_the_same_weights(tmp_path: Path) -> None:
    config = str(CONFIGS / "digits.yaml")
    overrides = [*TINY, "train.steps=24", "train.checkpoint_every=8", "train.eval_every=8"]
    args = [config, *overrides, "--no-report"]
    straight = vqkit_cmd("train", *args, "--run-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    # The same run in a process that SIGKILLs itself after step 13 (train's on_step hook; see the helper).
    helper = str(ROOT / "tests" / "kill_after_step.py")
    crashed = subprocess.run(
        [sys.executable, helper, "13", config, str(tmp_path / "crashed"), *overrides],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert crashed.returncode != 0  # SIGKILL after step 13: the last checkpoint is step 8
    assert [p.name for p in sorted((tmp_path / "crashed" / "checkpoints").glob("step_*"))][
        -1
    ] == "step_0000008"
    resumed = vqkit_cmd("train", *args, "--run-dir", str(tmp_path / "crashed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_process_ddp_run(tmp_path: Path) -> None:
    result = vqkit_cmd(
        "train",
        str(CONFIGS / "synthetic.yaml"),
        *TINY,
        "train.steps=20",
        "train.eval_every=10",
        "train.checkpoint_every=10",
        "--nproc",
        "2",
        "--run-dir",
        str(tmp_path / "ddp"),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "ddp" / "eval.json").read_text())["metrics"]
    assert np.isfinite(metrics["mse"]) and metrics["codebook/utilization"] > 0


def test_pretrain_then_finetune(tmp_path: Path) -> None:
    run = tmp_path / "pre"
    code = main(
        [
            "train",
            str(CONFIGS / "synthetic.yaml"),
            *TINY,
            "train.steps=10",
            "train.eval_every=10",
            "train.checkpoint_every=10",
            "--pretrain-epochs",
            "1",
            "--run-dir",
            str(run),
            "--no-report",
        ]
    )
    assert code == 0
    phases = {line.split(",")[1] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"pretrain", "train", "val"} <= phases


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", str(CONFIGS / "digits.yaml"), "train.stpes=3"], "train.stpes"),
        (
            ["train", str(CONFIGS / "fashion_mnist.yaml"), "data.data_dir=/nonexistent/fmnist"],
            "dataset-fashion-mnist",
        ),
        (["eval", "/nonexistent/run"], "run"),
    ],
)
def test_bad_inputs_give_clear_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main([*args[:2], *args[2:], *(["--run-dir", str(tmp_path / "r")] if args[0] == "train" else [])]) == 1
    )
    assert message in capsys.readouterr().err


def test_corrupt_inputs_are_named_and_nothing_is_written(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "codes.npz"
    assert main(["encode", str(digits_run), str(bad_png), "-o", str(out)]) == 1
    assert "bad.png" in capsys.readouterr().err and not out.exists()
    bad_codes = tmp_path / "bad.npz"
    bad_codes.write_bytes(b"not an archive")
    assert main(["decode", str(digits_run), str(bad_codes), "-o", str(tmp_path / "o")]) == 1
    assert "bad.npz" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_speech_codec_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    pytest.importorskip("pystoi")
    if not any(Path(p, "espeak-ng").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    run = tmp_path / "speech"
    tiny_codec = [
        "data.num_clips=10",
        "data.segment_seconds=0.5",
        "model.n_filters=4",
        "model.lstm=0",
        "model.latent_dim=24",
        "model.stft_sizes=[256, 512]",
        "model.n_mels=32",
        "model.mel_n_fft=512",
        "train.batch_size=4",
        "train.steps=4",
        "train.eval_every=4",
        "train.checkpoint_every=4",
        "eval.max_items=4",
    ]
    assert main(["train", str(CONFIGS / "speech.yaml"), *TINY, *tiny_codec, "--run-dir", str(run)]) == 0
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["kbps"] == pytest.approx(1.2) and metrics["bits_per_item"] == 25 * 24  # 0.5 s at 50 Hz
    for key in ("lsd", "mel_distance", "si_sdr", "stoi", "pesq", "chroma_similarity"):
        assert key in metrics, key
    wav = tmp_path / "tone.wav"
    t = np.arange(22050) / 22050
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 22050)  # another rate: resampled to 16 kHz on the way in
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(run), str(wav), "-o", str(codes)]) == 0
    assert "1200 bits" in capsys.readouterr().out  # 1 s at 1.2 kbps
    assert main(["decode", str(run), str(codes), "-o", str(tmp_path / "out")]) == 0
    audio, rate = sf.read(tmp_path / "out" / "tone.wav")
    assert rate == 16000 and audio.shape == (16000,)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert main(["encode", str(run), str(bad), "-o", str(tmp_path / "bad.npz")]) == 1
    assert "bad.wav" in capsys.readouterr().err and not (tmp_path / "bad.npz").exists()


def test_adversarial_codec_training_checkpoints_and_resumes_the_discriminator(tmp_path: Path) -> None:
    if not any(Path(p, "espeak-ng").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    run = tmp_path / "gan"
    args = [
        "train",
        str(CONFIGS / "speech.yaml"),
        *TINY,
        "data.num_clips=10",
        "data.segment_seconds=0.5",
        "model.n_filters=4",
        "model.lstm=0",
        "model.latent_dim=24",
        "model.stft_sizes=[256]",
        "model.n_mels=32",
        "model.mel_n_fft=512",
        "train.batch_size=2",
        "train.eval_every=100",
        "train.checkpoint_every=1",
        "train.log_every=1",
        "train.adversarial=true",
        "train.discriminator_filters=4",
        "--run-dir",
        str(run),
        "--no-report",
    ]
    assert main([*args, "train.steps=2"]) == 0
    latest = sorted((run / "checkpoints").glob("step_*"))[-1]
    assert {"discriminator.safetensors", "discriminator_optimizer.safetensors"} <= {
        p.name for p in latest.iterdir()
    }
    assert main([*args, "train.steps=3", "--resume"]) == 0
    log = (run / "metrics.csv").read_text()
    assert "loss/discriminator" in log and "loss/adversarial" in log and "loss/feature_matching" in log
    with pytest.raises(ValueError, match="train.adversarial"):
        from vqkit.train.config import load_config
        from vqkit.train.loop import train

        train(load_config(CONFIGS / "digits.yaml", ["train.adversarial=true", *TINY]), tmp_path / "img")


def test_encode_keeps_the_residual_levels_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--num-quantizers K`` and ``--kbps R`` cut the codes after K levels (a model trained with quantizer
    dropout serves every rate); ``decode`` takes the shorter codes as they are."""
    import soundfile as sf

    codec = make_tiny_codec(
        {"name": "residual_vq", "kwargs": {"codebook_size": 16, "num_quantizers": 3, "dropout": 0.5}}
    )
    tokenizer = vqkit.save_tokenizer(codec, tmp_path / "codec")
    wav = tmp_path / "clip.wav"
    sf.write(wav, 0.3 * np.sin(np.arange(800) / 8.0), 8000)
    assert codec.bitrate_kbps(num_quantizers=2) == 16.0  # 2000 frames/s x 8 bits
    for flags, levels in (
        (["--num-quantizers", "2"], 2),
        (["--kbps", "17"], 2),
        (["--kbps", "24"], 3),
        ([], 3),
    ):
        codes = tmp_path / f"codes{len(flags)}{levels}.npz"
        assert main(["encode", str(tokenizer), str(wav), "-o", str(codes), *flags]) == 0
        archive, _ = read_codes(codes)
        assert archive[0].shape[-1] == levels
        assert f"{200 * 4 * levels} bits" in capsys.readouterr().out
        out = tmp_path / f"decoded{len(flags)}{levels}"
        assert main(["decode", str(tokenizer), str(codes), "-o", str(out)]) == 0
        assert (out / "clip.wav").exists()
    assert (
        main(["encode", str(tokenizer), str(wav), "-o", str(tmp_path / "x.npz"), "--num-quantizers", "4"])
        == 1
    )
    assert "--num-quantizers: expected 1 to 3" in capsys.readouterr().err
    assert main(["encode", str(tokenizer), str(wav), "-o", str(tmp_path / "x.npz"), "--kbps", "4"]) == 1
    assert "--kbps: expected at least 8" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_export_onnx_writes_the_whole_tokenizer(digits_run: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx"
    assert main(["export", str(digits_run), str(out), "--onnx"]) == 0
    model, _ = load_run_model(digits_run)
    x = torch.rand(3, 1, 8, 8)
    session = ort.InferenceSession(str(out / "encode.onnx"))
    codes = session.run(None, {"x": x.numpy()})[0]
    assert np.array_equal(codes, model.encode(x).numpy())
    decoder = ort.InferenceSession(str(out / "decode.onnx"))
    images = decoder.run(None, {"codes": codes})[0]
    np.testing.assert_allclose(images, model.decode(torch.from_numpy(codes)).detach().numpy(), atol=1e-5)
