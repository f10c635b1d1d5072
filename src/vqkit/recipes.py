"""Training recipes that are library functions, not scripts.

``kmeans_init_from_encoder`` is the second stage of the pretrain-then-finetune fix for tokens collapse
("Representation Collapsing Problems in Vector Quantization", Zhao et al., arXiv 2411.16550): after training the
autoencoder without quantization, run the (pretrained) encoder over data and initialize the codebook by k-means
on its outputs, so codes start spread over the modes the encoder has learned instead of squeezed around an
untrained encoder's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from vqkit.quantizers.base import Quantizer


@torch.no_grad()
def kmeans_init_from_encoder(
    quantizer: Quantizer,
    encoder: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    *,
    max_vectors: int = 65536,
) -> int:
    """Initialize ``quantizer``'s codebook(s) by k-means on ``encoder`` outputs.

    Args:
        quantizer: a codebook quantizer (VQ family, residual or product forms).
        encoder: maps an input batch to vectors in the quantizer's layout (``[..., D]`` or ``[B, D, *S]``).
        batches: input batches; read until ``max_vectors`` vectors are collected.
        max_vectors: cap on the vectors k-means sees.

    Returns:
        The number of vectors used.
    """
    collected: list[torch.Tensor] = []
    total = 0
    for batch in batches:
        z, _ = quantizer.flatten_vectors(encoder(batch), "encoder output")
        collected.append(z[: max_vectors - total].float())
        total += collected[-1].shape[0]
        if total >= max_vectors:
            break
    if total == 0:
        raise ValueError("batches: expected at least one non-empty batch, got none")
    quantizer.init_codebook(torch.cat(collected))
    return total
