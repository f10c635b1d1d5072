"""``vqkit encode --entropy-code`` / ``vqkit decode`` of coded files end to end: the prior fitted on the run's
training split and stored with it, exact round trips (the same files as the plain archive), exported
tokenizers, wrong tokenizers and priors refused, corrupt files named with nothing written; and the measured
coded bits of ``vqkit eval`` and the bench table."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vqkit
from tests.conftest import tiny_codec
from vqkit.cli import main
from vqkit.coding import CodePrior, HeldOutCodedRate, read_coded_file, tokenizer_identity
from vqkit.train.batches import batches
from vqkit.train.files import read_codes
from vqkit.train.run import load_run_model, load_split, run_config

pytest.importorskip("constriction")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ["train.log_every=5", "train.tensorboard=false", "train.progress=false", "eval.max_items=64"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("entropy") / "digits"
    args = ["train", str(CONFIGS / "digits.yaml"), *TINY, "train.steps=10", "train.checkpoint_every=10"]
    assert main([*args, "train.eval_every=10", "--run-dir", str(run), "--no-report"]) == 0
    return run


def images(folder: Path, count: int = 3) -> list[str]:
    from PIL import Image

    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def coded(run: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The same three images as a plain archive and as a coded file."""
    inputs = images(tmp_path)
    plain, vqc = tmp_path / "codes.npz", tmp_path / "codes.vqc"
    assert main(["encode", str(run), *inputs, "-o", str(plain)]) == 0
    assert main(["encode", str(run), *inputs, "-o", str(vqc), "--entropy-code"]) == 0
    return plain, vqc, inputs


def test_the_prior_is_fitted_on_the_training_split_and_decoding_is_exact(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "code_prior.safetensors").unlink(missing_ok=True)
    inputs = images(tmp_path)
    vqc = tmp_path / "codes.vqc"
    assert main(["encode", str(run), *inputs, "-o", str(vqc), "--entropy-code"]) == 0
    out = capsys.readouterr().out
    assert f"fitted the code prior: {run / 'code_prior.safetensors'}" in out and "entropy-coded" in out
    model, _ = load_run_model(run)
    prior = CodePrior.load(run / "code_prior.safetensors")
    assert prior.identity == tokenizer_identity(model)
    config = run_config(run)  # the oracle: the training split's codes counted with numpy
    train = load_split(config, "train")
    with torch.no_grad():
        codes = torch.cat([model.encode(x) for x in batches(train, 256)]).reshape(-1).numpy()
    assert np.array_equal(prior.counts[0], np.bincount(codes, minlength=64))
    assert main(["encode", str(run), *inputs, "-o", str(vqc), "--entropy-code"]) == 0
    assert "fitted the code prior" not in capsys.readouterr().out  # stored with the run: reused
    plain = tmp_path / "codes.npz"
    assert main(["encode", str(run), *inputs, "-o", str(plain)]) == 0
    got, meta = read_coded_file(vqc, prior)
    want, info = read_codes(plain)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)) and meta["items"] == info["items"]
    for name, codes_file in (("a", plain), ("b", vqc)):
        assert main(["decode", str(run), str(codes_file), "-o", str(tmp_path / name)]) == 0
    for i in range(3):
        assert (tmp_path / "a" / f"img{i}.png").read_bytes() == (tmp_path / "b" / f"img{i}.png").read_bytes()


def test_an_exported_tokenizer_uses_the_runs_prior(
    run: Path, coded: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, vqc, inputs = coded
    tok = tmp_path / "tok"
    assert main(["export", str(run), str(tok)]) == 0
    capsys.readouterr()
    assert main(["decode", str(tok), str(vqc), "-o", str(tmp_path / "x")]) == 1
    assert "holds no code_prior.safetensors; pass --prior FILE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    prior = str(run / "code_prior.safetensors")
    assert main(["decode", str(tok), str(vqc), "-o", str(tmp_path / "x"), "--prior", prior]) == 0
    assert main(["decode", str(run), str(plain), "-o", str(tmp_path / "y")]) == 0
    assert (tmp_path / "x" / "img1.png").read_bytes() == (tmp_path / "y" / "img1.png").read_bytes()
    shutil.copy(prior, tok / "code_prior.safetensors")  # stored with the tokenizer: found there
    again = tmp_path / "again.vqc"
    assert main(["encode", str(tok), *inputs, "-o", str(again), "--entropy-code"]) == 0
    assert again.read_bytes() == vqc.read_bytes()  # same tokenizer, same prior: the same bytes


def test_a_wrong_tokenizer_or_prior_is_refused(
    run: Path, coded: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, vqc, inputs = coded
    model, _ = load_run_model(run)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # another tokenizer: the same config, other weights
    other = vqkit.save_tokenizer(model, tmp_path / "other")
    shutil.copy(run / "code_prior.safetensors", other / "code_prior.safetensors")
    capsys.readouterr()
    assert main(["encode", str(other), *inputs, "-o", str(tmp_path / "o.vqc"), "--entropy-code"]) == 1
    err = capsys.readouterr().err
    assert "code_prior.safetensors' was fitted for tokenizer 'sha256:" in err and "not this one" in err
    assert main(["decode", str(other), str(vqc), "-o", str(tmp_path / "o")]) == 1
    assert f"{str(vqc)!r} holds the codes of tokenizer 'sha256:" in capsys.readouterr().err
    assert not (tmp_path / "o.vqc").exists() and not (tmp_path / "o").exists()
    assert main(["encode", str(run), inputs[0], "-o", str(tmp_path / "p.npz"), "--prior", "x"]) == 1
    assert "--prior: only with --entropy-code" in capsys.readouterr().err


def test_a_stale_prior_in_a_run_is_refitted(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / "code_prior.safetensors"
    current = CodePrior.load(path) if path.exists() else None
    CodePrior(np.ones((1, 64), dtype=np.int64), (64,), identity="sha256:an-earlier-checkpoint").save(path)
    assert (
        main(["encode", str(run), *images(tmp_path, 1), "-o", str(tmp_path / "c.vqc"), "--entropy-code"]) == 0
    )
    assert "fitted the code prior" in capsys.readouterr().out
    refitted = CodePrior.load(path)
    assert refitted.identity.startswith("sha256:") and refitted.identity != "sha256:an-earlier-checkpoint"
    assert current is None or refitted == current


def test_corrupt_files_are_named_and_nothing_is_written(
    run: Path, coded: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, vqc, inputs = coded
    data = vqc.read_bytes()
    bad = tmp_path / "bad.vqc"
    for damaged, reason in (
        (data[:-9], "truncated"),
        (data[:40] + bytes([data[40] ^ 4]) + data[41:], "checksum"),
    ):
        bad.write_bytes(damaged)
        capsys.readouterr()
        assert main(["decode", str(run), str(bad), "-o", str(tmp_path / "out")]) == 1
        assert f"error: {bad}: {reason}" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    assert (
        main(["encode", str(run), *inputs, "-o", str(vqc), "--entropy-code"]) == 0
    )  # its own file: replaced
    assert main(["encode", str(run), inputs[0], "-o", inputs[1], "--entropy-code"]) == 1  # an image: kept
    assert "is not a vqkit codes file, so it is not replaced" in capsys.readouterr().err


def test_without_the_coding_extra_nothing_is_written(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "constriction", None)
    out = tmp_path / "c.vqc"
    assert main(["encode", str(run), *images(tmp_path, 1), "-o", str(out), "--entropy-code"]) == 1
    assert "needs the coding extra: pip install 'vqkit[coding]'" in capsys.readouterr().err
    assert not out.exists()


def test_residual_levels_are_coded_under_the_priors_first_positions(tmp_path: Path) -> None:
    """An audio codec's first two of three levels (``--num-quantizers 2``), coded under the first two
    positions of a prior the test fits and stores with the exported tokenizer."""
    import soundfile as sf

    codec = tiny_codec({"name": "residual_vq", "kwargs": {"codebook_size": 16, "num_quantizers": 3}})
    tok = vqkit.save_tokenizer(codec, tmp_path / "codec")
    with torch.no_grad():
        codes = codec.encode(torch.randn(8, 1, 400) * 0.3)
    CodePrior.fit(codes, codec.quantizer.alphabet_sizes, identity=tokenizer_identity(codec)).save(
        tok / "code_prior.safetensors"
    )
    wav = tmp_path / "clip.wav"
    sf.write(wav, 0.3 * np.sin(np.arange(800) / 8.0), 8000)
    for name, flags in (("plain.npz", []), ("coded.vqc", ["--entropy-code"])):
        assert (
            main(["encode", str(tok), str(wav), "-o", str(tmp_path / name), "--num-quantizers", "2", *flags])
            == 0
        )
        assert main(["decode", str(tok), str(tmp_path / name), "-o", str(tmp_path / name[:5])]) == 0
    assert (tmp_path / "plain" / "clip.wav").read_bytes() == (tmp_path / "coded" / "clip.wav").read_bytes()
    (archive,), _ = read_codes(tmp_path / "plain.npz")
    assert archive.shape[-1] == 2


def test_eval_and_the_bench_table_report_the_measured_coded_bits(run: Path) -> None:
    from vqkit.train.bench_report import _table
    from vqkit.train.evaluate import evaluate

    model, _ = load_run_model(run)
    config = run_config(run)
    test = load_split(config, "test")
    metrics = evaluate(model, test, config)
    oracle = HeldOutCodedRate(model.quantizer.alphabet_sizes)  # the same codes, measured apart
    with torch.no_grad():
        for x in batches(test, config.eval.batch_size, config.eval.max_items):
            oracle.update(model.encode(x))
    expected = oracle.compute()
    assert metrics["coded_bits_per_item"] == expected["coded_bits_per_item"]
    assert metrics["codebook/coded_bits"] == pytest.approx(metrics["coded_bits_per_item"] / 16)  # 4x4 latents
    entry = {
        "method": "vq",
        "bits": 6,
        "codebook_size": "1×64",
        "codebook_parameters": 1024,
        "metrics": {k: (v, None) for k, v in metrics.items()},
        "encode_items_per_s": (1.0, None),
        "train_seconds": (1.0, None),
    }
    head, _, row = _table([entry], ["psnr"], [])
    cells = dict(zip(head.split(" | "), row.split(" | "), strict=True))
    assert cells["coded bits/item"] == f"{metrics['coded_bits_per_item']:.4g}"
    assert cells["coded bits"] == f"{metrics['codebook/coded_bits']:.3g}"
    assert json.dumps(metrics)  # plain floats, as eval.json and results.json store them
