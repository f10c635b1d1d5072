"""Stochastic code assignment by Gumbel noise on the dense distances (``search.pairwise_distances``, which
carries gradients: the Gumbel-softmax relaxation moves the input and the codes through them).

* ``gumbel_logits``: ``-d / T + G`` with ``G`` standard Gumbel noise. Its argmax is an exact sample of
  ``softmax(-d / T)`` (the Gumbel-max trick), which is RQ-VAE's stochastic sampling (Lee et al., CVPR 2022,
  arXiv 2203.01941); its softmax is the Gumbel-softmax relaxation (Jang et al., arXiv 1611.01144; Maddison et
  al., arXiv 1611.00712; dVAE of DALL-E, Ramesh et al., arXiv 2102.12092) at unit temperature relative to the
  scaled logits, so one temperature ``T`` sets both the sampling distribution and the sharpness of the
  relaxation, and ``T -> 0`` gives the nearest code.
"""

from __future__ import annotations

import torch


def gumbel_logits(distances: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-distances / temperature`` plus independent standard Gumbel noise ``[N, K]`` (torch's global generator:
    seeded runs repeat the draws). ``argmax(-1)`` samples ``softmax(-distances / temperature)`` exactly;
    ``softmax(-1)`` is the Gumbel-softmax relaxation of that sample."""
    # G = -log(E), E ~ Exp(1), the form torch.nn.functional.gumbel_softmax uses; E is kept off 0 (a float32 draw
    # is exactly 0 about once in 2^24, every few steps at N x K = 10^6), where G = +inf would make softmax NaN.
    exponential = torch.empty_like(distances).exponential_().clamp_(min=torch.finfo(distances.dtype).tiny)
    noise = -exponential.log()
    return distances / -temperature + noise
