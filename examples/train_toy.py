"""The README example: a quantizer inside a toy autoencoder. Run ``python examples/train_toy.py``."""

import torch
from torch import nn

import vqkit

torch.manual_seed(0)
x = torch.randn(4096, 8) @ torch.randn(8, 32)  # a toy batch: 32-dim vectors on an 8-dim subspace
encoder, decoder = nn.Linear(32, 16), nn.Linear(16, 32)
q = vqkit.create_quantizer("ema_vq", dim=16, codebook_size=256, init="kmeans")
opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters(), *q.parameters()], lr=3e-3)
for _ in range(300):
    out = q(encoder(x))  # out.quantized [4096, 16], out.codes [4096, 1], out.losses, out.metrics
    loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss  # out.loss: the quantizer's weighted terms
    opt.zero_grad()
    loss.backward()
    opt.step()

q.eval()
with torch.no_grad():
    z = encoder(x)
    codes = q.encode(z)  # [4096, 1] int64
    assert torch.equal(q.decode(codes), q(z).quantized)  # exact round trip
    mse = (decoder(q.decode(codes)) - x).pow(2).mean()
usage = vqkit.CodebookUsage(q.alphabet_sizes)
usage.update(codes)
stats = usage.compute()
print(
    f"{q.codebook_label} codebook, {q.bits_per_vector:g} bits/vector "
    f"({stats['effective_bits']:.2f} effective), utilization {stats['utilization']:.2f}, "
    f"relative MSE {mse / x.var():.3f}"
)
