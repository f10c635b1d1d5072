"""LFQ's collapse in the demo's conv VQ-VAE (issue 13), reproduced without the data.

In ``make demo`` (Fashion-MNIST, 8 bits per latent vector) LFQ used 4 of its 256 codes. The cause, measured at
initialization of that model: the encoder's outputs share a per-channel offset (mean |z_c| = 0.088) seven times
their spread (std 0.0125), so after LFQ's in-projection six of the eight sign channels have the same sign for
every input (3 codes in use at step 0). At ``temperature=0.01`` their soft assignment is already saturated
(logits ``4 h / tau`` ≈ 25), the commitment loss then drives every ``h`` to ``±1`` (logits ≈ 400) and the
entropy penalty's gradient, ``∝ p (1 - p)``, vanishes on exactly the channels it should split. The fix is LFQ's
first-batch data init of the in-projection (``data_init=True``).

Here a small MLP encoder is calibrated to those statistics and trained end to end with LFQ at 8 bits; the old
behaviour (``data_init=False``) keeps a handful of codes, the fix nearly all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vqkit
from vqkit.quantizers.scalar import LFQ

DIM, LATENT, BITS, STEPS, BATCH = 16, 64, 8, 300, 256
OFFSET, SPREAD = 0.088, 0.0125  # the conv VQ-VAE's encoder output at init: per-channel |mean| and std


def calibrated_encoder(x: torch.Tensor) -> nn.Sequential:
    """An MLP whose outputs on ``x`` have, per channel, a mean of magnitude ``OFFSET`` and a std ``SPREAD``."""
    encoder = nn.Sequential(nn.Linear(DIM, LATENT), nn.ReLU(), nn.Linear(LATENT, LATENT))
    last = encoder[2]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        z = encoder(x)
        last.weight.mul_(SPREAD / z.std(0)[:, None])
        z = encoder(x)
        sign = torch.where(torch.rand(LATENT) < 0.5, -1.0, 1.0)
        last.bias.add_(sign * OFFSET - z.mean(0))
    return encoder


def train_lfq(kwargs: Mapping[str, object], seed: int = 0) -> tuple[float, float, float]:
    """Utilization (fraction of the 256 codes) before training and after ``STEPS`` steps, and the final MSE."""
    torch.manual_seed(seed)
    mixing = torch.randn(4, DIM)
    data = torch.tanh(torch.randn(8192, 4) @ mixing) + 0.1 * torch.randn(8192, DIM)
    encoder = calibrated_encoder(data[:1024])
    quantizer = vqkit.create_quantizer("lfq", dim=LATENT, bits=BITS, **kwargs)
    decoder = nn.Sequential(nn.Linear(LATENT, LATENT), nn.ReLU(), nn.Linear(LATENT, DIM))
    modules = nn.ModuleList([encoder, quantizer, decoder])
    optimizer = torch.optim.Adam(modules.parameters(), lr=1e-3)

    def used() -> float:
        with torch.no_grad():
            return quantizer.encode(encoder(data)).unique().numel() / 2**BITS

    start = used()
    for _ in range(STEPS):
        x = data[torch.randint(0, len(data), (BATCH,))]
        out = quantizer(encoder(x))
        loss = F.mse_loss(decoder(out.quantized), x) + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quantizer.eval()
    with torch.no_grad():
        mse = float(F.mse_loss(decoder(quantizer(encoder(data)).quantized), data))
    return start, used(), mse


def test_the_calibrated_encoder_starts_with_most_channels_constant() -> None:
    """The setting reproduces the demo's start: a few codes at initialization, before any training."""
    torch.manual_seed(0)
    data = torch.randn(2048, DIM)
    z = calibrated_encoder(data)(data)
    torch.testing.assert_close(z.mean(0).abs(), torch.full((LATENT,), OFFSET), rtol=0, atol=1e-6)
    torch.testing.assert_close(z.std(0), torch.full((LATENT,), SPREAD), rtol=1e-4, atol=0)
    q = vqkit.create_quantizer("lfq", dim=LATENT, bits=BITS, data_init=False)
    assert q.encode(z).unique().numel() <= 16


@pytest.mark.parametrize(
    ("kwargs", "collapses"), [({"data_init": False}, True), ({}, False)], ids=["old", "data_init"]
)
def test_lfq_keeps_its_codes_with_the_data_init(kwargs: dict[str, object], collapses: bool) -> None:
    start, end, _ = train_lfq(kwargs)
    assert start < 0.05, start  # the same few codes before the first training step
    if collapses:  # the old behaviour: training does not recover them
        assert end < 0.1, end
    else:
        assert end > 0.5, end


def test_data_init_standardizes_the_projection_to_the_code_scale() -> None:
    """Each sign channel of the first training batch: mean 0, standard deviation ``scale`` (the code value)."""
    torch.manual_seed(0)
    q = vqkit.create_quantizer("lfq", dim=LATENT, bits=BITS, scale=0.5)
    z = OFFSET + SPREAD * torch.randn(512, LATENT)
    assert q.encode(z).unique().numel() <= 16 and q.needs_warm_start
    q.train()(z)
    assert not q.needs_warm_start and bool(q.initialized)
    with torch.no_grad():
        h = q.project_in(z)
    torch.testing.assert_close(h.mean(0), torch.zeros(BITS), rtol=0, atol=1e-5)
    torch.testing.assert_close(h.std(0), torch.full((BITS,), 0.5), rtol=1e-4, atol=0)
    assert q.encode(z).unique().numel() > 200


def test_data_init_state_survives_loading_and_old_state_dicts_count_as_initialized() -> None:
    torch.manual_seed(0)
    trained = vqkit.create_quantizer("lfq", dim=LATENT, bits=BITS).train()
    trained(torch.randn(64, LATENT))
    fresh = vqkit.create_quantizer("lfq", dim=LATENT, bits=BITS)
    fresh.load_state_dict(trained.state_dict())
    assert not fresh.needs_warm_start
    legacy = {k: v for k, v in trained.state_dict().items() if k != "initialized"}  # saved before data_init
    older = LFQ(LATENT, BITS)
    older.load_state_dict(legacy)
    assert not older.needs_warm_start
    linear = older.input_linear()
    assert linear is not None
    weight = linear.weight.detach().clone()
    older.train()(torch.randn(64, LATENT))  # a loaded projection is never re-initialized
    assert torch.equal(weight, linear.weight.detach())


def test_nothing_to_initialize_without_a_projection() -> None:
    assert not vqkit.create_quantizer("lfq", dim=BITS, bits=BITS).needs_warm_start
    residual = vqkit.ResidualLFQ(LATENT, bits=4, num_quantizers=2)
    stages = [stage for stage in residual.modules() if isinstance(stage, LFQ)]
    assert len(stages) == 2 and not any(stage.needs_warm_start for stage in stages)
