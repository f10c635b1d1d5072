"""Bad input gets a clear error naming the argument, what was expected and what was given."""

from __future__ import annotations

import json

import pytest
import torch

import vqkit
from vqkit.functional.numerics import all_finite
from vqkit.utils import folders


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("product_vq", {"dim": 10, "num_groups": 4}, r"dim: expected a multiple of num_groups=4, got dim=10"),
        ("vq", {"dim": 0}, r"dim: expected a positive integer, got 0"),
        ("vq", {"dim": 8, "codebook_size": 0}, r"codebook_size: expected a positive integer, got 0"),
        (
            "vq",
            {"dim": 8, "distance": "manhattan"},
            r"distance: expected one of \['l2', 'cosine'\], got 'manhattan'",
        ),
        ("vq", {"dim": 8, "update": "sgd"}, r"update: expected one of"),
        ("vq", {"dim": 8, "decay": 1.5}, r"decay: expected a number in \[0.0, 1.0\), got 1.5"),
        ("vq", {"dim": 8, "layout": "nchw"}, r"layout: expected one of"),
        ("fsq", {"dim": 4, "levels": [8, 1]}, r"levels: expected integers >= 2, got \[8, 1\]"),
        ("lfq", {"dim": 4, "bits": 80}, r"bits: expected at most 62"),
        (
            "residual_vq",
            {"dim": 4, "codebook_size": [8, 8], "num_quantizers": 3},
            r"codebook_size: expected 1 or",
        ),
    ],
)
def test_construction_errors(name: str, kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        vqkit.create_quantizer(name, **kwargs)


def test_unknown_name_lists_registered_names() -> None:
    with pytest.raises(KeyError, match=r"unknown quantizer 'vqq'; registered: .*residual_vq"):
        vqkit.create_quantizer("vqq", dim=4)


def test_wrong_last_dimension() -> None:
    q = vqkit.VQ(8, 16)
    with pytest.raises(ValueError, match=r"x: expected size dim=8 on the last dim .* got shape \(2, 3, 5\)"):
        q(torch.randn(2, 3, 5))
    qf = vqkit.VQ(8, 16, layout="channels_first")
    with pytest.raises(ValueError, match=r"x: expected size dim=8 on dim 1 .* got shape \(2, 5, 8\)"):
        qf(torch.randn(2, 5, 8))


def test_non_float_and_non_tensor_input() -> None:
    q = vqkit.VQ(4, 16)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor, got dtype torch.int64"):
        q(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
        q([[0.0] * 4])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_rejected_unless_allowed(bad: float) -> None:
    x = torch.randn(5, 4)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        vqkit.VQ(4, 16)(x)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        vqkit.VQ(4, 16).encode(x)
    out = vqkit.VQ(4, 16, allow_nonfinite=True).eval()(x)
    assert out.codes.shape == (5, 1)


def test_decode_rejects_out_of_range_and_bad_codes() -> None:
    q = vqkit.ResidualVQ(4, [16, 8])
    with pytest.raises(ValueError, match=r"codes: code 1 must lie in \[0, 8\), got values in \[8, 8\]"):
        q.decode(torch.tensor([[3, 8]]))
    with pytest.raises(ValueError, match=r"codes: code 0 must lie in \[0, 16\), got values in \[-1, 2\]"):
        q.decode(torch.tensor([[-1, 0], [2, 1]]))
    with pytest.raises(ValueError, match=r"codes: expected shape \[\.\.\., 2\]"):
        q.decode(torch.tensor([[1, 2, 3]]))
    with pytest.raises(TypeError, match="codes: expected an integer tensor, got torch.float32"):
        q.decode(torch.zeros(3, 2))


def test_load_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match="path: expected a folder"):
        vqkit.load_quantizer(tmp_path / "missing")
    folder = vqkit.save_quantizer(vqkit.VQ(4, 8), tmp_path / "q")
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="path: cannot read weights"):
        vqkit.load_quantizer(folder)
    (folder / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not a vqkit quantizer config"):
        vqkit.load_quantizer(folder)


def test_save_replaces_atomically_and_leaves_no_partial_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    q = vqkit.VQ(4, 8)
    path = vqkit.save_quantizer(q, tmp_path / "q")
    before = (path / "weights.safetensors").read_bytes()

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(folders, "save_file", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        vqkit.save_quantizer(vqkit.VQ(4, 8), path)
    assert (path / "weights.safetensors").read_bytes() == before  # the old folder is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no staging leftovers


def test_failed_publish_restores_the_old_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vqkit.utils import atomic

    path = vqkit.save_quantizer(vqkit.VQ(4, 8), tmp_path / "q")
    before = (path / "weights.safetensors").read_bytes()
    real_replace = atomic.os.replace
    calls = []

    def flaky(src: object, dst: object) -> None:
        calls.append(1)
        if len(calls) == 2:  # the rename that publishes the new folder
            raise KeyboardInterrupt
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        vqkit.save_quantizer(vqkit.VQ(4, 8), path)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert (path / "weights.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]
    vqkit.load_quantizer(path)


def test_codebook_argument_ranges() -> None:
    with pytest.raises(ValueError, match=r"eps: expected a number in \(0.0, inf\], got 0.0"):
        vqkit.VQ(4, 8, eps=0.0)
    with pytest.raises(ValueError, match="kmeans_iters: expected a number in"):
        vqkit.VQ(4, 8, kmeans_iters=-3)
    with pytest.raises(ValueError, match="codebook_size: expected 1 or num_groups=2 sizes"):
        vqkit.ProductVQ(8, [4, 8, 16], num_groups=2)


def test_usage_rejects_out_of_range_codes() -> None:
    usage = vqkit.CodebookUsage([4, 8])
    with pytest.raises(ValueError, match=r"codes: code 0 must lie in \[0, 4\), got values in \[9, 9\]"):
        usage.update(torch.tensor([[9, 0]]))
    assert usage.compute()["num_vectors"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_the_finiteness_check_at_the_limits_of_the_dtype(dtype: torch.dtype) -> None:
    """``all_finite`` reads the two extremes: the largest finite values pass (no overflow in the check), every
    NaN and infinity is caught wherever it is."""
    big = torch.finfo(dtype).max
    x = torch.tensor([[big, -big], [0.0, 1.0]], dtype=dtype)
    assert all_finite(x)
    for bad in (float("nan"), float("inf"), float("-inf")):
        for i in range(4):
            y = x.clone()
            y.view(-1)[i] = bad
            assert not all_finite(y), (bad, i)
    assert not all_finite(torch.full((3,), float("inf"), dtype=dtype))
