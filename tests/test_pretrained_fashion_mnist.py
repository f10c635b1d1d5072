"""The shipped Fashion-MNIST backbone and tokenizer: listed, loaded offline, exact round trip on real images,
and the backbone's reconstruction quality where its entry says it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vqkit
from vqkit.data import load_dataset
from vqkit.data.images import FASHION_MNIST_DIR
from vqkit.metrics.eval.image import psnr
from vqkit.pretrained import pretrained_entry

BACKBONE, TOKENIZER = "fashion_mnist_backbone", "fashion_mnist_vq8"
needs_data = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)


def _test_images(count: int) -> torch.Tensor:
    test = load_dataset("fashion_mnist", "test")
    return torch.stack([test[i] for i in range(count)])


def test_both_are_listed_and_load_offline_with_their_rate() -> None:
    entries = {e.name: e for e in vqkit.list_pretrained()}
    backbone, tokenizer = entries[BACKBONE], entries[TOKENIZER]
    assert (backbone.kind, tokenizer.kind) == ("backbone", "tokenizer")
    assert backbone.item_shape == tokenizer.item_shape == [1, 28, 28]
    assert backbone.data == tokenizer.data == "fashion_mnist" and backbone.rate is None
    model = vqkit.load_pretrained(TOKENIZER)
    assert not model.training and model.quantizer.codebook_label == "1×256"
    assert tokenizer.rate == model.bits_per_item([1, 28, 28]) == 7 * 7 * 8
    assert {"psnr", "ssim", "mse", "utilization", "perplexity", "bits_per_item"} <= set(tokenizer.metrics)
    # The backbone is the tokenizer's starting point and ceiling: same architecture, better reconstructions.
    base = vqkit.load_pretrained(BACKBONE)
    same = {k: v for k, v in base.to_config().items() if k != "quantizer"}
    assert same == {k: v for k, v in model.to_config().items() if k != "quantizer"}
    assert backbone.metrics["psnr"] > tokenizer.metrics["psnr"]
    for entry in (backbone, tokenizer):
        size = sum(p.stat().st_size for p in entry.folder.iterdir())
        assert size < 10 * 2**20, (entry.name, size)


@needs_data
@torch.no_grad()
def test_the_tokenizer_round_trips_real_test_images_exactly() -> None:
    model = vqkit.load_pretrained(TOKENIZER)
    x = _test_images(16)
    codes = model.encode(x)
    assert codes.shape == (16, 7, 7, 1) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 256
    decoded = model.decode(codes)
    assert torch.equal(decoded, model(x).reconstruction)  # bit for bit, under the same (no-grad) mode
    assert torch.equal(model.encode(x), codes)  # encoding has no state
    assert float(psnr(x, decoded.clamp(0, 1)).mean()) > 15.0  # a reconstruction, not noise


@needs_data
@torch.no_grad()
def test_the_backbone_reconstructs_64_test_images_as_well_as_its_entry_says() -> None:
    entry = pretrained_entry(BACKBONE)
    model = vqkit.load_pretrained(BACKBONE)
    x = _test_images(64)
    out = model.forward_unquantized(x)
    assert out.codes.shape == (64, 7, 7, 0)  # no quantizer: continuous 64-dim latents
    measured = float(psnr(x, out.reconstruction.clamp(0, 1)).mean())
    assert abs(measured - entry.metrics["psnr"]) < 0.5, (measured, entry.metrics["psnr"])
