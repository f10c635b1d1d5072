"""``vqkit bench``: equal-rate runs, the report, resuming a bench, unreachable rates, bad bench files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vqkit.cli import main
from vqkit.data import load_dataset
from vqkit.train.bench import load_bench, run_bench
from vqkit.train.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def bench_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(f"config: {ROOT / 'configs' / 'digits.yaml'}\n{body}")
    return path


def test_bench_runs_every_method_at_equal_rate_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bench_file(
        tmp_path,
        "overrides: [train.steps=6, train.eval_every=6, train.checkpoint_every=6, eval.max_items=50]\n"
        "methods: [vq, ivq, residual_vq]\nbits: [4, 6]\nseeds: [0, 1]\n",
    )
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    ceilings = [r for r in results["rows"] if r.get("ceiling")]
    ran = [r for r in results["rows"] if "skipped" not in r and not r.get("ceiling")]
    assert len(ran) == 10  # ivq cannot spend 6 bits with 4-line levels: 2 skipped rows of 12
    assert any("ivq" in note for note in results["skipped"])
    # The ceiling: the same model trained without its quantizer for the same steps, once per seed, its rate
    # the float32 latent (4x4 positions of latent_dim 32 values in digits.yaml).
    assert [(r["seed"], r["steps"], r["quantizer"]) for r in ceilings] == [(0, 6, "none"), (1, 6, "none")]
    latent_values = 16 * ceilings[0]["bits"] // 32
    assert all(r["metrics"]["bits_per_item"] == 32 * latent_values for r in ceilings)
    assert not any(k.startswith("codebook/") for r in ceilings for k in r["metrics"])
    assert ceilings[0]["metrics"]["psnr"] > max(r["metrics"]["psnr"] for r in ran if r["seed"] == 0)
    for row in ran:  # equal rate: 4x4 latents of `bits` bits
        assert row["nominal_bits"] == row["bits"] and row["metrics"]["bits_per_item"] == 16 * row["bits"]
        assert row["encode_items_per_s"] > 0 and row["metrics"]["codebook/utilization"] > 0
    report = (out / "report.md").read_text()
    assert "| vq | 4 | 64 |" in report and "±" in report  # two seeds: mean ± spread
    assert "| continuous (ceiling) |" in report and "**From scratch:**" in report
    assert "Not run" in report and (out / "plots" / "rd_psnr.png").exists()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/bench.json")}
    assert main(["bench", str(path), "--out", str(out), "--methods", "vq"]) == 0  # finished runs are skipped
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # --seeds replaces the file's seeds: seed 1 alone is reported, from the runs already made
    assert main(["bench", str(path), "--out", str(out), "--methods", "vq", "--seeds", "1"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["method"], r["seed"]) for r in rows} == {("continuous (ceiling)", 1), ("vq", 1)}
    # --report-only trains nothing: seed 2 was never run, so the report has seeds 0 and 1 and says what is missing.
    assert main(["bench", str(path), "--out", str(out), "--seeds", "0,1,2", "--report-only"]) == 0
    assert not list(out.glob("runs/*-s2"))
    results = json.loads((out / "results.json").read_text())
    reported = {(r["method"], r["seed"]) for r in results["rows"] if "skipped" not in r}
    assert ("vq", 0) in reported and ("vq", 1) in reported and not any(seed == 2 for _, seed in reported)
    assert "runs not finished yet (reported with --report-only)" in results["skipped"]
    capsys.readouterr()


@pytest.mark.parametrize("seeds", ["", "a,b", "1,-2"])
def test_bad_seed_lists_are_usage_errors(
    tmp_path: Path, seeds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as err:
        main(["bench", str(bench_file(tmp_path, "methods: [vq]\n")), "--seeds", seeds])
    assert err.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_shipped_bench_files_load() -> None:
    for path in sorted((ROOT / "configs" / "bench").glob("*.yaml")):
        for quick in (False, True):
            spec = load_bench(path, quick=quick)
            assert spec.config.exists() and (spec.methods or spec.fixed) and spec.bits and spec.seeds


@pytest.mark.parametrize(
    ("body", "match"),
    [("methods: [nope]\n", "bench.methods"), ("colour: red\n", "bench.colour"), ("bits: []\n", "empty")],
)
def test_bad_bench_files_are_named(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_bench(bench_file(tmp_path, body))


def test_fixed_entries_run_at_their_own_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = (
        "overrides: [train.steps=4, train.eval_every=4, train.checkpoint_every=4, eval.max_items=30]\n"
        "ceiling: false\n"
        "fixed:\n  - {label: 'VQ 1x32', name: vq, kwargs: {codebook_size: 32}}\n"
        "  - {label: 'IVQ 2x2', name: ivq, kwargs: {lines: 4, levels: [[2, 4], [2, 4]]}}\n"
    )
    path = bench_file(tmp_path, body)
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["method"], r["bits"]) for r in rows} == {("VQ 1x32", 5.0), ("IVQ 2x2", 8.0)}
    assert "| IVQ 2x2 | 8 | 128 |" in (out / "report.md").read_text()
    capsys.readouterr()
    # An edited bench file does not reuse runs made under the old settings: it says which setting changed.
    longer = bench_file(tmp_path, body.replace("train.steps=4", "train.steps=5"))
    with pytest.raises(
        ConfigError, match=r"holds a run made with another configuration \(changed: train.steps\)"
    ):
        run_bench(longer, out)
    assert (out / "runs" / "VQ_1x32-s0" / "bench.json").exists()  # nothing is deleted
    elsewhere = bench_file(tmp_path, body.replace("]\n", ", train.log_every=2, train.device=cpu]\n", 1))
    run_bench(elsewhere, out)  # where and how often it logs does not change a run: the results are reused
    with pytest.raises(ConfigError, match=r"bench.fixed\[0\]"):
        load_bench(bench_file(tmp_path, "fixed: [{name: nope}]\n"))


def test_rows_count_pretraining_apart_from_the_quantized_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """D3: a pretrained row once recorded ``steps`` as steps + epochs. Now ``steps`` is ``train.steps`` (the
    same for every row of a bench), ``pretrain_epochs`` the stage before it, ``total_steps`` every step."""
    body = (
        "overrides: [train.steps=2, train.eval_every=2, train.checkpoint_every=2, eval.max_items=30]\n"
        "ceiling: false\n"
        "fixed:\n  - {label: plain, name: vq, kwargs: {codebook_size: 16}}\n"
        "  - {label: pretrained, name: vq, kwargs: {codebook_size: 16}, overrides: [train.pretrain_epochs=1]}\n"
    )
    out = tmp_path / "out"
    run_bench(bench_file(tmp_path, body), out)
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    epoch = math.ceil(len(load_dataset("digits", "train")) / 64)  # digits.yaml: batch_size 64
    assert (rows["plain"]["steps"], rows["plain"]["pretrain_epochs"], rows["plain"]["total_steps"]) == (
        2,
        0,
        2,
    )
    pretrained = rows["pretrained"]
    assert (pretrained["steps"], pretrained["pretrain_epochs"], pretrained["total_steps"]) == (
        2,
        1,
        epoch + 2,
    )
    capsys.readouterr()


def test_one_residual_model_draws_its_rate_distortion_curve_over_its_levels(tmp_path: Path) -> None:
    """``levels: true``: the trained model is also evaluated at every prefix of its levels, one row each at the
    prefix's rate; with quantizer dropout more levels reconstruct better."""
    path = bench_file(
        tmp_path,
        "overrides: [train.steps=40, train.eval_every=40, train.checkpoint_every=40, eval.max_items=100]\n"
        "fixed:\n"
        "  - {label: RVQ, name: residual_vq, kwargs: {codebook_size: 16, num_quantizers: 3, dropout: 0.5,"
        " init: kmeans}, levels: true}\n",
    )
    out = tmp_path / "out"
    run_bench(path, out)
    rows = json.loads((out / "results.json").read_text())["rows"]
    by_method = {r["method"]: r for r in rows}
    ceiling = by_method.pop("continuous (ceiling)")
    assert set(by_method) == {"RVQ", "RVQ (1/3 levels)", "RVQ (2/3 levels)"}
    assert [by_method[m]["bits"] for m in ("RVQ (1/3 levels)", "RVQ (2/3 levels)", "RVQ")] == [4, 8, 12]
    for method, row in by_method.items():  # 4x4 latents at the prefix's rate
        assert row["metrics"]["bits_per_item"] == 16 * row["bits"], method
    mse = [by_method[m]["metrics"]["mse"] for m in ("RVQ (1/3 levels)", "RVQ (2/3 levels)", "RVQ")]
    assert mse[0] > mse[1] > mse[2] > ceiling["metrics"]["mse"]  # the continuous model bounds every rate
    report = (out / "report.md").read_text()
    assert "| RVQ (1/3 levels) | 4 | 64 |" in report
    with pytest.raises(ConfigError, match=r"bench.fixed\[0\].levels: expected true or false"):
        load_bench(bench_file(tmp_path, "fixed:\n  - {name: residual_vq, levels: yes please}\n"))
