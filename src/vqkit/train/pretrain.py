"""Pretrain-then-finetune (``train.pretrain_epochs > 0``): the two pieces the loop switches between.

The first ``pretrain_epochs`` epochs train encoder and decoder without the quantizer (``Unquantized``); then the
codebook is k-means-initialized from the pretrained encoder's outputs (``kmeans_from_encoder``, which runs
``vqkit.recipes.kmeans_init_from_encoder``) and training goes on with the quantizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vqkit.models.base import Tokenizer, TokenizerOutput
from vqkit.quantizers.base import Quantizer
from vqkit.recipes import kmeans_init_from_encoder
from vqkit.train.batches import batches
from vqkit.train.config import RunConfig


class Unquantized(nn.Module):
    """``forward`` = the model's ``forward_unquantized`` (encoder -> decoder), for the pretrain stage.

    A module of its own because DDP syncs what ``forward`` runs: the pretrain stage gets its own wrapper, one
    that tolerates the quantizer's unused parameters.
    """

    def __init__(self, net: Tokenizer) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        return self.net.forward_unquantized(x)


def fits_codebook(quantizer: Quantizer) -> bool:
    """Whether ``quantizer`` has codebooks to fit from data (``init_codebook``); FSQ and LFQ, and composites of
    them, have none: a fixed grid or the signs, whatever the data."""
    stages = getattr(quantizer, "stage_list", None)
    if stages is not None:
        return all(fits_codebook(stage) for stage in stages)
    return type(quantizer).init_codebook is not Quantizer.init_codebook


def kmeans_from_encoder(net: Tokenizer, train_set: Any, config: RunConfig, device: torch.device) -> bool:
    """The recipe's second stage: the codebook from k-means on the pretrained encoder's outputs of the training
    split (in order, at most ``train.kmeans_vectors``). Same result on every rank: k-means gathers. Returns
    whether it ran (not for a quantizer without codebooks, ``fits_codebook``)."""
    if not fits_codebook(net.quantizer):
        return False
    was_training = net.training
    net.eval()
    limit = max(1, config.train.kmeans_vectors)
    kmeans_init_from_encoder(
        net.quantizer,
        lambda x: net.embed(x.to(device)),
        batches(train_set, config.eval.batch_size),
        max_vectors=limit,
    )
    net.train(was_training)
    return True
