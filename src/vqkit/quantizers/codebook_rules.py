"""A ``Codebook``'s update and restart rules as small strategy objects, chosen once at construction.

* Update (``update=``): ``GradUpdate`` leaves the codes to the optimizer (they are an ``nn.Parameter`` and the
  ``codebook`` loss reaches them); ``EMAUpdate`` keeps exponential moving averages of assignment counts and sums
  with Laplace smoothing (van den Oord et al. 2017, appendix; Razavi et al. 2019) and the codes are a buffer.
* Restart (``restart=``): ``NoRestart``; ``DeadRestart`` replaces codes whose EMA assignment count drops under
  the threshold by batch vectors (Encodec's ``expire_codes_``); ``AnchorRestart`` is the online clustered
  codebook rule of CVQ-VAE (Zheng & Vedaldi, ICCV 2023, arXiv 2307.15139): each code moves towards its nearest
  batch feature with weight ``alpha_k = exp(-10 K p_k / (1 - decay) - 1e-3)``, ``p_k`` the EMA usage frequency.

The rules are stateless: every tensor they read or write is a buffer of the codebook, so the state dict is the
codebook's alone. Every collective runs on every rank and every training step (``vqkit.distributed``).

Deviations, each deliberate:

* Encodec overwrites restarted codes at the next EMA step (its ``embed`` is recomputed from ``embed_avg``); here a
  restarted code also gets its EMA sum and count set, the count to ``restart_threshold / decay ** (1 / (1 -
  decay))``, so the restart sticks and the code has one EMA time constant (100 steps at decay 0.99) of grace
  before it can be restarted again.
* CVQ picks anchors per rank; here the anchor for code ``k`` is the nearest feature over all ranks' batches,
  which is what a single process would pick on the concatenated batch.
* Restart candidates are drawn per rank, gathered, and assigned to dead codes by a deterministic stride from
  the step counter, so every rank chooses the same replacement without sharing a random generator.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from vqkit import distributed
from vqkit.distributed import ProcessGroup
from vqkit.functional.search import nearest_code
from vqkit.functional.stats import code_counts


class Codebook(Protocol):
    """What the rules read and write of ``vqkit.quantizers.codebook.Codebook`` (typed here, so that this module
    does not import the one that imports it)."""

    num_codes: int
    dim: int
    options: Any  # CodebookOptions
    process_group: ProcessGroup | None
    weight: torch.Tensor
    ema_sum: torch.Tensor
    cluster_size: torch.Tensor
    usage: torch.Tensor
    step: torch.Tensor

    @property
    def vectors(self) -> torch.Tensor: ...

    def smoothed_counts(self) -> torch.Tensor: ...

    def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None: ...


def batch_counts(
    codebook: Codebook, z: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor | None
) -> torch.Tensor:
    """This rank's counts ``[K]`` of ``codes`` in ``z``'s dtype: the caller's ``counts`` (copied: the rules reduce
    them over ranks in place) or counted here."""
    if counts is None:
        return code_counts(codes, codebook.num_codes, z.dtype)
    return counts.to(dtype=z.dtype, copy=True)


class GradUpdate:
    """The optimizer moves the codes; the statistics (counts) are kept for usage and restarts only."""

    name = "grad"
    codebook_loss = True

    def create(self, codebook: Codebook, weight: torch.Tensor) -> None:
        codebook.weight = nn.Parameter(weight)  # nn.Module.__setattr__ registers it

    def statistics(
        self, codebook: Codebook, z: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This step's counts ``[K]``, summed over ranks (no sums: the codes do not follow them); ``counts``:
        this rank's, when the caller has them."""
        counts = batch_counts(codebook, z, codes, counts)
        distributed.all_reduce_sum_(counts, codebook.process_group)
        return counts, None

    def move(self, codebook: Codebook, sums: torch.Tensor | None) -> None:
        """Nothing: the optimizer moves the codes."""

    def sync(self, codebook: Codebook) -> None:
        """Nothing derived to keep in step with the codes."""


class EMAUpdate:
    """Codes are the EMA sums over the smoothed EMA counts; no ``codebook`` loss (the codes are a buffer)."""

    name = "ema"
    codebook_loss = False

    def create(self, codebook: Codebook, weight: torch.Tensor) -> None:
        codebook.register_buffer("weight", weight)
        codebook.register_buffer("ema_sum", weight.clone())  # = weight * cluster_size (ones)

    def statistics(
        self, codebook: Codebook, z: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This step's counts ``[K]`` and sums ``[K, d]``, summed over ranks in one collective; ``counts``:
        this rank's, when the caller has them."""
        counts = batch_counts(codebook, z, codes, counts)
        sums = torch.zeros(codebook.num_codes, codebook.dim, device=z.device, dtype=z.dtype)
        packed = torch.cat([counts[:, None], sums.index_add_(0, codes, z)], dim=1)
        distributed.all_reduce_sum_(packed, codebook.process_group)
        return packed[:, 0], packed[:, 1:]

    def move(self, codebook: Codebook, sums: torch.Tensor | None) -> None:
        assert sums is not None
        codebook.ema_sum.lerp_(sums, 1.0 - codebook.options.decay)
        codebook.weight.copy_(codebook.ema_sum / codebook.smoothed_counts()[:, None])

    def sync(self, codebook: Codebook) -> None:
        """After the codes were set from outside (init, restart): EMA sums that reproduce them."""
        codebook.ema_sum.copy_(codebook.weight * codebook.smoothed_counts()[:, None])


Nearest = tuple[torch.Tensor, torch.Tensor]
"""For each code, the distance ``[K]`` to its nearest row of a batch and that row ``[K]``: a search's column
minima (``nearest_code(..., nearest_rows=True)``), which ``AnchorRestart`` reads instead of searching again."""


class NoRestart:
    name = "none"

    def apply(self, codebook: Codebook, z: torch.Tensor, nearest: Nearest | None = None) -> None:
        """Nothing: unused codes stay where they are."""


class DeadRestart:
    """Codes under the threshold move onto batch vectors gathered over ranks. ``restart_measure="count"``: the
    EMA assignment count per batch under ``restart_threshold`` (Encodec); ``"share"``: the EMA share of the
    assignments under ``restart_threshold / K``, a threshold relative to uniform use that means the same at
    any batch size (Mimi, Défossez et al. 2024, arXiv 2410.00037)."""

    name = "dead"

    def apply(self, codebook: Codebook, z: torch.Tensor, nearest: Nearest | None = None) -> None:
        k, options = codebook.num_codes, codebook.options
        # A rank without vectors offers no candidates but still joins the gather (or the others wait forever).
        n = z.shape[0]
        local = z[torch.randint(n, (k,), device=z.device)] if n > 0 else z.new_zeros((0, z.shape[1]))
        candidates = distributed.all_gather_cat(
            local, codebook.process_group
        )  # [<=W*K, d], same on all ranks
        if candidates.shape[0] == 0:  # no vector on any rank (known to every rank): nothing to restart with
            return
        # A stride walk from the step counter: the same choice on every rank, different codes each step.
        pick = (torch.arange(k, device=z.device) * 7919 + codebook.step * 104729) % candidates.shape[0]
        sizes = codebook.cluster_size
        # The threshold as an EMA count: absolute, or the share restart_threshold / K of the EMA total.
        limit = options.restart_threshold
        if options.restart_measure == "share":
            limit = sizes.sum() * (options.restart_threshold / k)
        dead = sizes < limit
        codebook.weight.data.copy_(torch.where(dead[:, None], candidates[pick], codebook.weight))
        # Grace period: a restarted code starts at the count that takes one EMA time constant (1 / (1 - decay)
        # steps) of zero use to decay back under the threshold; at exactly the threshold it would be dead again
        # after the next decay and restarted every step.
        horizon = max(1, round(1.0 / (1.0 - options.decay)))
        grace = limit / max(options.decay, 1e-6) ** horizon
        sizes.copy_(torch.where(dead, torch.zeros_like(sizes) + grace, sizes))


class AnchorRestart:
    """CVQ's anchors: every code moves towards its nearest feature, the more the less it is used."""

    name = "anchor"

    def apply(self, codebook: Codebook, z: torch.Tensor, nearest: Nearest | None = None) -> None:
        """``nearest``: each code's nearest row of ``z`` from the step's own search (its column minima, as
        CVQ's code takes them from the forward's distances); without it, a search with the roles swapped."""
        k, distance = codebook.num_codes, codebook.options.distance
        # For each code, its nearest feature in this rank's batch, then the nearest over all ranks. A rank
        # without vectors still joins the gather, with infinite distances that never win.
        if z.shape[0] > 0:
            if nearest is None:
                best = nearest_code(codebook.vectors.detach(), z, distance=distance)
                nearest = best.distances, best.codes
            distances, rows = nearest
            local = torch.cat([distances.to(z.dtype)[:, None], z[rows]], dim=1)  # [K, 1 + d]
        else:
            local = z.new_zeros((k, 1 + codebook.dim))
            local[:, 0] = float("inf")
        gathered = distributed.all_gather_cat(local[None], codebook.process_group)  # [W, K, 1 + d]
        closest, winner = gathered[:, :, 0].min(dim=0)
        anchors = gathered[winner, torch.arange(k, device=z.device), 1:]
        decay = codebook.options.decay
        alpha = torch.exp(-(codebook.usage * k * 10.0) / (1.0 - decay) - 1e-3)[:, None]
        alpha = alpha * torch.isfinite(closest)[:, None]  # no vector on any rank: codes stay where they are
        codebook.weight.data.mul_(1.0 - alpha).add_(anchors * alpha)


UPDATE_RULES: dict[str, type[GradUpdate] | type[EMAUpdate]] = {"grad": GradUpdate, "ema": EMAUpdate}
RESTART_RULES: dict[str, type[NoRestart] | type[DeadRestart] | type[AnchorRestart]] = {
    "none": NoRestart,
    "dead": DeadRestart,
    "anchor": AnchorRestart,
}
