"""One optimization step: the model, its optimizer, the optional discriminator, and the forward modules.

``TrainStep`` owns what a step changes and nothing about when it runs: the loop (``vqkit.train.loop``) decides
the batch, the stage (pretraining or not), and what happens between steps (logging, validation, checkpoints).

A NaN or Inf loss raises ``NonFiniteLoss`` before the optimizer step, so the weights and the optimizer state
are those of the last good step. The check reads the log row, whose values the step reads back to the host
anyway: it adds no device sync. Under DDP the ranks agree on it (one scalar all-reduce per step), so they all
skip or all stop: a rank that skipped its backward alone would leave the others waiting in the gradient sync.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vqkit import distributed
from vqkit.models.base import Tokenizer
from vqkit.train.adversary import Adversary
from vqkit.train.checkpoint import Part
from vqkit.train.config import RunConfig
from vqkit.train.log import scalar_metrics
from vqkit.train.pretrain import Unquantized
from vqkit.train.runtime import wrap_ddp


class TrainStep:
    """Adam over the model's trainable parameters, and the adversary when ``train.adversarial`` is set.

    Until ``distribute`` is called the step runs the bare model; ``distribute`` puts DDP wrappers in place.
    """

    def __init__(self, net: Tokenizer, config: RunConfig, device: torch.device) -> None:
        train = config.train
        self.net = net
        self.grad_clip = train.grad_clip
        self.trainable = [p for p in net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.trainable, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay
        )
        self.adversary = Adversary(net, config, device) if train.adversarial else None
        self.model: nn.Module = net
        self.pretrain: nn.Module = Unquantized(net)

    def others(self) -> dict[str, Part] | None:
        """What a checkpoint stores beside the model and its optimizer (the discriminator, if any)."""
        return self.adversary.parts() if self.adversary is not None else None

    def distribute(self, device: torch.device, *, pretraining: bool) -> None:
        """Wrap the forward modules in DDP (a no-op for one process). Called once the weights are final (a
        resume has loaded them); the pretrain wrapper only while pretraining steps remain."""
        self.model = wrap_ddp(self.net, device)
        if pretraining:
            self.pretrain = wrap_ddp(self.pretrain, device, find_unused_parameters=True)

    def __call__(self, x: torch.Tensor, *, pretraining: bool, diagnostics: bool = True) -> dict[str, float]:
        """One step on this rank's batch ``x``; returns the step's log row (the quantizer's diagnostics in it
        only with ``diagnostics``: the loop asks on logging steps).

        Raises ``NonFiniteLoss`` (on every rank) when a loss term is NaN or Inf on any rank: before the
        update, or, for the discriminator of adversarial runs, after its own update (``updated=True``).
        """
        # Train mode at every step: the periodic validation (``evaluate``) and the k-means stage switch the
        # model to eval mode while they run. They restore the mode they found, but setting it here keeps each
        # step independent of whatever ran between steps (and of the mode a model passed to ``train`` had).
        self.net.train()
        if pretraining:
            loss = self.pretrain(x).loss
            row = {"loss": float(loss.detach())}
        else:
            out = self.model(x)
            row = scalar_metrics(out, diagnostics=diagnostics)
            loss = out.loss
            if self.adversary is not None:
                loss = loss + self.adversary.generator_loss(x, out.reconstruction, row)
        check_finite(row, loss.device, updated=False)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.optimizer.step()
        if self.adversary is not None and not pretraining:
            self.adversary.step(x, out.reconstruction.detach(), row)
            check_finite(row, loss.device, updated=True)
        return row


class NonFiniteLoss(RuntimeError):
    """A step's loss is NaN or Inf (on this rank or another).

    Attributes:
        terms: the non-finite values of this rank's log row by name (``{"loss/mse": nan, "loss": nan}``);
            empty when only another rank's loss was non-finite.
        row: this rank's log row of the step.
        updated: whether an update had already been made (the discriminator steps after the generator), so
            the step cannot be skipped.
    """

    def __init__(self, terms: dict[str, float], row: dict[str, float], *, updated: bool) -> None:
        shown = ", ".join(f"{name}={value}" for name, value in terms.items())
        super().__init__(shown or "on another rank")
        self.terms, self.row, self.updated = terms, row, updated


def check_finite(row: dict[str, float], device: torch.device, *, updated: bool) -> None:
    """Raise ``NonFiniteLoss`` on every rank when a loss term of ``row`` (``loss``, ``loss/<term>``) is NaN or
    Inf on any rank. The quantizer's diagnostics in the row are not losses: they are not checked."""
    names = [n for n in row if n.startswith("loss/")] + ["loss"]  # the terms first, then their sum
    terms = {name: row[name] for name in names if name in row and not math.isfinite(row[name])}
    bad = bool(terms)
    if distributed.world_size() > 1:
        flag = torch.tensor([float(bad)], device=device)
        bad = bool(distributed.all_reduce_sum_(flag).item() > 0)
    if bad:
        raise NonFiniteLoss(terms, dict(row), updated=updated)
