"""Optional adversarial training of audio models (``train.adversarial``): Encodec's discriminator and losses.

Encodec's multi-scale STFT discriminator with hinge losses; the generator gets
``adversarial_weight * hinge + feature_matching_weight * feature matching`` (no loss balancer: the weights are
plain multipliers). The discriminator steps after the generator, on the detached reconstruction, with its own
Adam (same learning rate and betas); under DDP it is wrapped too. It is checkpointed beside the model
(``parts``), so a resumed adversarial run continues both players.
"""

from __future__ import annotations

import torch
from torch import nn

from vqkit.models.base import Tokenizer
from vqkit.models.discriminator import (
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)
from vqkit.train.config import RunConfig
from vqkit.train.runtime import wrap_ddp


class Adversary:
    """The discriminator, its optimizer, and the two halves of the adversarial step."""

    def __init__(self, net: Tokenizer, config: RunConfig, device: torch.device) -> None:
        if net.modality != "audio":
            raise ValueError(
                f"train.adversarial: only audio models have a discriminator, got a {net.modality} model"
            )
        self.config = config.train
        channels = int(getattr(net, "channels", 1))
        self.module = MultiScaleSTFTDiscriminator(
            filters=config.train.discriminator_filters, in_channels=channels
        )
        self.module.to(device)
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=config.train.lr, betas=config.train.betas
        )
        self.wrapped = wrap_ddp(self.module, device)

    def parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer | None]]:
        """What a checkpoint stores beside the model (``save_checkpoint``'s ``others``)."""
        return {"discriminator": (self.module, self.optimizer)}

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, row: dict[str, float]) -> torch.Tensor:
        """The weighted adversarial terms added to the model's loss; logs both into ``row``."""
        # The unwrapped discriminator: only the generator's gradients matter here (they flow back into the
        # DDP-wrapped model); the discriminator's own gradients from this pass are cleared before its step.
        with torch.no_grad():
            real = self.module(x)
        fake = self.module(recon)
        adversarial = generator_hinge_loss(fake.logits)
        matching = feature_matching_loss(real.features, fake.features)
        row["loss/adversarial"] = float(adversarial.detach())
        row["loss/feature_matching"] = float(matching.detach())
        return self.config.adversarial_weight * adversarial + self.config.feature_matching_weight * matching

    def step(self, x: torch.Tensor, recon: torch.Tensor, row: dict[str, float]) -> None:
        """One discriminator step on real ``x`` and the detached ``recon``; logs its loss into ``row``."""
        self.optimizer.zero_grad(set_to_none=True)
        real, fake = self.wrapped(x), self.wrapped(recon)
        loss = discriminator_hinge_loss(real.logits, fake.logits)
        loss.backward()
        self.optimizer.step()
        row["loss/discriminator"] = float(loss.detach())
