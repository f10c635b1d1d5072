"""SimVQ: frozen codebook times a learned linear map."""

from __future__ import annotations

import pytest
import torch

import vqkit


def test_decode_uses_the_projected_codebook() -> None:
    q = vqkit.SimVQ(8, 32).eval()
    with torch.no_grad():
        q.transform.weight.mul_(3.0)
        q.transform.bias.fill_(0.5)
    codes = torch.arange(32)[:, None]
    expected = q.codebook @ q.transform.weight.t() + q.transform.bias
    torch.testing.assert_close(q.decode(codes), expected)
    assert not torch.allclose(q.decode(codes), q.codebook)  # the authors' decode bug: raw C
    # Each effective code is its own nearest code.
    assert torch.equal(q.encode(expected), codes)


def test_only_the_map_trains_unless_the_codebook_is_trainable() -> None:
    frozen = vqkit.SimVQ(8, 16)
    assert [n for n, _ in frozen.named_parameters()] == ["transform.weight", "transform.bias"]
    assert frozen.codebook.std().item() == pytest.approx(8**-0.5, rel=0.2)
    out = frozen(torch.randn(64, 8))
    out.loss.backward()
    assert frozen.transform.weight.grad is not None and frozen.transform.weight.grad.abs().sum() > 0
    trainable = vqkit.SimVQ(8, 16, train_codebook=True)
    trainable(torch.randn(64, 8)).loss.backward()
    assert isinstance(trainable.codebook, torch.nn.Parameter) and trainable.codebook.grad is not None


def test_transform_diagnostics() -> None:
    q = vqkit.SimVQ(6, 16)
    with torch.no_grad():
        q.transform.weight.copy_(torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.0, 0.0, 0.0])))
    metrics = q(torch.randn(10, 6)).metrics
    assert metrics["w_rank"] == 3
    assert metrics["w_frobenius"] == pytest.approx(6**0.5)


def test_training_uses_most_of_a_large_codebook() -> None:
    # SimVQ's claim: every code moves with W, so utilization stays high where plain VQ collapses.
    # Measured: VQ uses 3% of 1024 codes (MSE 1.97), SimVQ 80% (MSE 0.73).
    torch.manual_seed(0)
    data = torch.randn(8192, 4) * 2
    usage = {}
    for name in ("vq", "simvq"):
        q = vqkit.create_quantizer(name, dim=4, codebook_size=1024)
        opt = torch.optim.Adam(q.parameters(), lr=1e-2)
        for _ in range(100):
            out = q(data[torch.randint(len(data), (1024,))])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        tracker = vqkit.CodebookUsage(q.alphabet_sizes)
        tracker.update(q.eval().encode(data))
        usage[name] = tracker.compute()["utilization"]
    assert usage["simvq"] > 2 * usage["vq"], usage
