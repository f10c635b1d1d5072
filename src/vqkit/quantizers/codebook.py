"""Codebook storage and its update rules, shared by every codebook-based quantizer.

A ``Codebook`` holds ``K`` codes of dimension ``d`` and knows how to

* initialize them: ``"uniform"`` U(-1/K, 1/K) (VQ-VAE / taming), ``"gaussian"`` N(0, 1/d) (so |c| ≈ 1; the
  SimVQ choice), or ``"kmeans"``: k-means++ and Lloyd on the first training batch, gathered over ranks
  (SoundStream / Encodec practice);
* search them (the shared chunked kernel, ``"l2"`` or ``"cosine"``) and look codes up;
* update them after each training step: ``update="grad"`` leaves that to the optimizer (the codebook is an
  ``nn.Parameter``); ``update="ema"`` keeps exponential moving averages of assignment counts and sums with
  Laplace smoothing (van den Oord et al. 2017, appendix; Razavi et al. 2019), and the codebook is a buffer;
* restart unused codes: ``restart="dead"`` replaces codes whose EMA assignment count drops under
  ``restart_threshold`` by random batch vectors (Encodec's ``expire_codes_``); ``restart="anchor"`` applies the
  online clustered codebook rule of CVQ-VAE (Zheng & Vedaldi, ICCV 2023, arXiv 2307.15139): each code moves
  towards its nearest batch feature with weight ``alpha_k = exp(-10 K p_k / (1 - decay) - 1e-3)`` where
  ``p_k`` is the EMA of its usage frequency.

All statistics are reduced over ``process_group`` through ``vqkit.distributed`` with the same collectives on
every rank and every training step, so codebooks stay identical across ranks and no rank can deadlock.

Deviations, each deliberate:

* Encodec overwrites restarted codes at the next EMA step (its ``embed`` is recomputed from ``embed_avg``); here a
  restarted code also gets its EMA sum and count set, the count to ``restart_threshold / decay ** (1 / (1 -
  decay))``, so the restart sticks and the code has one EMA time constant (100 steps at decay 0.99) of grace
  before it can be restarted again. Counts start at one, so with the default threshold every code unused by
  the first training batch is restarted onto data at step one (as in Encodec, where counts start at zero).
* CVQ picks anchors per rank; here the anchor for code ``k`` is the nearest feature over all ranks' batches,
  which is what a single process would pick on the concatenated batch.
* Restart candidates are drawn per rank, gathered, and assigned to dead codes by a deterministic stride from
  the step counter, so every rank chooses the same replacement without sharing a random generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed
from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.distributed import ProcessGroup
from vqkit.functional.kmeans import kmeans
from vqkit.functional.search import nearest_code
from vqkit.functional.stats import code_counts
from vqkit.types import Distance

Init = Literal["uniform", "gaussian", "kmeans"]
Update = Literal["grad", "ema"]
Restart = Literal["none", "dead", "anchor"]

INITS = ("uniform", "gaussian", "kmeans")
UPDATES = ("grad", "ema")
RESTARTS = ("none", "dead", "anchor")
DISTANCES = ("l2", "cosine")


@dataclass(frozen=True)
class CodebookOptions:
    """A ``Codebook``'s strategies and constants, everything but its size and ``normalize``; checked on creation.

    VQ, LooC and IVQ keep these as keyword arguments of their own (the registry and configs read their
    signatures, and each has its own defaults, so the fields have none) and hand them on as this one value:
    ``from_arguments`` picks them out of a constructor's arguments, ``Codebook.from_options`` builds from them.
    ``Codebook`` checks its keyword arguments by building one, so the checks live here only.
    """

    init: Init
    update: Update
    distance: Distance
    restart: Restart
    decay: float
    eps: float
    restart_threshold: float
    kmeans_iters: int
    kmeans_seed: int

    def __post_init__(self) -> None:
        # Each value is replaced by its checked, normalized form (plain str, float, int), checked in field order.
        checked = {
            "init": check_choice("init", self.init, INITS),
            "update": check_choice("update", self.update, UPDATES),
            "distance": check_choice("distance", self.distance, DISTANCES),
            "restart": check_choice("restart", self.restart, RESTARTS),
            "decay": check_range("decay", self.decay, 0.0, 1.0, high_open=True),
            "eps": check_range("eps", self.eps, 0.0, float("inf"), low_open=True),
            "restart_threshold": check_range("restart_threshold", self.restart_threshold, 0.0, float("inf")),
            "kmeans_iters": int(check_range("kmeans_iters", self.kmeans_iters, 0, 10_000)),
            "kmeans_seed": int(self.kmeans_seed),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> CodebookOptions:
        """The options among ``arguments`` (a quantizer constructor's ``locals()``), by field name: the one place
        that lists what a quantizer passes through to its codebooks."""
        return cls(**{field.name: arguments[field.name] for field in fields(cls)})

    def as_kwargs(self) -> dict[str, Any]:
        """The options as ``Codebook`` keyword arguments."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def vq_losses(z: torch.Tensor, q: torch.Tensor, *, codebook_term: bool = True) -> dict[str, torch.Tensor]:
    """The VQ-VAE pair, unweighted means over elements: ``commitment = |z - sg q|^2`` (moves the encoder) and
    ``codebook = |sg z - q|^2`` (moves a gradient-trained codebook; omitted for EMA codebooks)."""
    commitment = F.mse_loss(z, q.detach())
    if not codebook_term:
        return {"commitment": commitment}
    # The two terms have one value and differ only in where the gradient goes: without autograd (evaluation)
    # one pass over [N, D] serves both.
    needs_grad = torch.is_grad_enabled() and (z.requires_grad or q.requires_grad)
    return {"commitment": commitment, "codebook": F.mse_loss(q, z.detach()) if needs_grad else commitment}


class Codebook(nn.Module):
    """``K`` codes of dimension ``d`` with init, search, lookup and update rules (see module docstring).

    Args:
        num_codes: K.
        dim: d.
        init, update, distance, restart: strategies, see module docstring.
        decay: EMA decay of counts, sums and usage frequencies.
        eps: Laplace smoothing of EMA counts.
        restart_threshold: EMA assignment count (per training batch) under which a code is dead.
        kmeans_iters: Lloyd iterations for ``init="kmeans"``.
        kmeans_seed: seed of the k-means++ generator (the same on every rank).
        normalize: l2-normalize looked-up codes (VQGAN-FC / ViT-VQGAN factorized codes).
    """

    weight: torch.Tensor
    ema_sum: torch.Tensor
    cluster_size: torch.Tensor
    usage: torch.Tensor
    initialized: torch.Tensor
    step: torch.Tensor

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        init: Init = "uniform",
        update: Update = "grad",
        distance: Distance = "l2",
        restart: Restart = "none",
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_threshold: float = 1.0,
        kmeans_iters: int = 10,
        kmeans_seed: int = 0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.num_codes = check_positive_int("codebook_size", num_codes)
        self.dim = check_positive_int("codebook_dim", dim)
        options = CodebookOptions.from_arguments(locals())
        self.init_mode: str = options.init
        self.update_mode: str = options.update
        self.distance: Distance = options.distance
        self.restart: str = options.restart
        self.decay = options.decay
        self.eps = options.eps
        self.restart_threshold = options.restart_threshold
        self.kmeans_iters = options.kmeans_iters
        self.kmeans_seed = options.kmeans_seed
        self.normalize = bool(normalize)
        self.process_group: ProcessGroup | None = None

        weight = self._initial_weight()
        if self.update_mode == "grad":
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("ema_sum", weight.clone())  # = weight * cluster_size (ones)
        # EMA of per-batch assignment counts (EMA codebook statistics, dead-code threshold). It starts at one
        # ("each code seen once"): with zero, as in Encodec without k-means, the first EMA step divides unused
        # codes' sums by ~eps and blows them up. EMA of per-batch frequencies (CVQ anchors) starts at zero, as
        # in CVQ, so the first anchor step moves every code onto data.
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("initialized", torch.tensor(self.init_mode != "kmeans"))
        # A host-side copy of ``initialized`` once it is true: reading the buffer on every training step is a
        # device-to-host sync on GPU. Reset when a state dict is loaded (it may hold an uninitialized codebook).
        self._known_initialized = False
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_options(
        cls, num_codes: int, dim: int, options: CodebookOptions, *, normalize: bool = False
    ) -> Codebook:
        """``K = num_codes`` codes of dimension ``dim`` with the strategies and constants of ``options``."""
        return cls(num_codes, dim, **options.as_kwargs(), normalize=normalize)

    def _initial_weight(self) -> torch.Tensor:
        if self.init_mode == "uniform":
            return torch.empty(self.num_codes, self.dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)
        # "gaussian", and the placeholder of "kmeans" until the first batch arrives.
        return torch.randn(self.num_codes, self.dim) * self.dim**-0.5

    # ------------------------------------------------------------------ read
    @property
    def vectors(self) -> torch.Tensor:
        """The effective codes ``[K, d]`` (normalized when ``normalize``)."""
        return F.normalize(self.weight, dim=-1) if self.normalize else self.weight

    def search(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code of each row of ``z`` ``[N, d]`` -> ``[N]`` int64."""
        return nearest_code(z.detach(), self.vectors.detach(), distance=self.distance).codes

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N]`` -> ``[N, d]`` (differentiable w.r.t. the codebook when ``update="grad"``)."""
        return F.embedding(codes, self.vectors)

    def quantize(
        self, z: torch.Tensor, codes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The VQ step on ``z`` ``[N, d]``: k-means init (first training batch), nearest codes (unless ``codes``
        ``[N]`` are given), the looked-up codes ``q`` ``[N, d]`` (differentiable w.r.t. the codebook), the loss
        pair, and in training the statistics / EMA / restart update. Returns ``(codes, q, losses)``."""
        if self.training and self.init_mode == "kmeans" and not self.is_initialized():
            self.initialize_from(z)
        if codes is None:
            codes = self.search(z)
        q = self.lookup(codes)
        losses = vq_losses(z, q, codebook_term=self.update_mode == "grad")
        if self.training:
            self.update(z, codes)
        return codes, q, losses

    # ------------------------------------------------------------------ write (training only)
    def is_initialized(self) -> bool:
        """Whether the codes are set (always for ``init`` other than ``"kmeans"``); syncs with the device only
        until the answer is yes."""
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False

    @torch.no_grad()
    def initialize_from(self, z: torch.Tensor, *, force: bool = False) -> None:
        """k-means init from ``z`` gathered over ranks (the same result on every rank): once, when not yet
        initialized, or again with ``force`` (k-means from a pretrained encoder); call it on every rank."""
        if not force and self.is_initialized():
            return
        data = distributed.all_gather_cat(z.detach().to(self.weight.dtype), self.process_group)
        generator = torch.Generator(device=data.device).manual_seed(self.kmeans_seed)
        result = kmeans(
            data, self.num_codes, iters=self.kmeans_iters, distance=self.distance, generator=generator
        )
        self.set_codes(result.centers, counts=result.counts)
        self.initialized.fill_(True)
        self._known_initialized = True

    @torch.no_grad()
    def set_codes(self, vectors: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Overwrite the codebook (and EMA state) with ``vectors`` ``[K, d]``; ``counts`` seeds the EMA counts."""
        self.weight.data.copy_(vectors)
        if counts is not None:
            self.cluster_size.copy_(counts)
        if self.update_mode == "ema":
            self._sync_ema_sum()

    def _sync_ema_sum(self) -> None:
        self.ema_sum.copy_(self.weight * self._smoothed_counts()[:, None])

    def _smoothed_counts(self) -> torch.Tensor:
        n = self.cluster_size.sum()
        return (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n.clamp(min=self.eps)

    @torch.no_grad()
    def update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """After a training step's lookup: EMA statistics (all-reduced), codebook EMA, then restarts.

        Args:
            z: ``[N, d]`` the vectors that were quantized (in the codebook's space).
            codes: ``[N]`` their codes.
        """
        z = z.detach().to(self.weight.dtype)
        counts = code_counts(codes, self.num_codes, z.dtype)
        group = self.process_group
        if self.update_mode == "ema":
            sums = torch.zeros(self.num_codes, self.dim, device=z.device, dtype=z.dtype).index_add_(
                0, codes, z
            )
            packed = torch.cat([counts[:, None], sums], dim=1)  # one collective for counts and sums
            distributed.all_reduce_sum_(packed, group)
            counts, sums = packed[:, 0], packed[:, 1:]
        else:
            distributed.all_reduce_sum_(counts, group)
        weight = 1.0 - self.decay
        self.cluster_size.lerp_(counts, weight)
        self.usage.lerp_(counts / counts.sum().clamp(min=1.0), weight)
        if self.update_mode == "ema":
            self.ema_sum.lerp_(sums, weight)
            self.weight.copy_(self.ema_sum / self._smoothed_counts()[:, None])
        self.step.add_(1)
        if self.restart == "dead":
            self._restart_dead(z)
        elif self.restart == "anchor":
            self._anchor_update(z)

    def _restart_dead(self, z: torch.Tensor) -> None:
        k = self.num_codes
        # A rank without vectors offers no candidates but still joins the gather (or the others wait forever).
        n = z.shape[0]
        local = z[torch.randint(n, (k,), device=z.device)] if n > 0 else z.new_zeros((0, z.shape[1]))
        candidates = distributed.all_gather_cat(local, self.process_group)  # [<=W*K, d], same on all ranks
        if candidates.shape[0] == 0:  # no vector on any rank (known to every rank): nothing to restart with
            return
        # A stride walk from the step counter: the same choice on every rank, different codes each step.
        pick = (torch.arange(k, device=z.device) * 7919 + self.step * 104729) % candidates.shape[0]
        dead = self.cluster_size < self.restart_threshold
        self.weight.data.copy_(torch.where(dead[:, None], candidates[pick], self.weight))
        # Grace period: a restarted code starts at the count that takes one EMA time constant (1 / (1 - decay)
        # steps) of zero use to decay back under the threshold; at exactly the threshold it would be dead again
        # after the next decay and restarted every step.
        horizon = max(1, round(1.0 / (1.0 - self.decay)))
        grace_count = self.restart_threshold / max(self.decay, 1e-6) ** horizon
        self.cluster_size.copy_(
            torch.where(dead, torch.full_like(self.cluster_size, grace_count), self.cluster_size)
        )
        if self.update_mode == "ema":
            self._sync_ema_sum()

    def _anchor_update(self, z: torch.Tensor) -> None:
        # For each code, its nearest feature in this rank's batch, then the nearest over all ranks. A rank
        # without vectors still joins the gather, with infinite distances that never win.
        if z.shape[0] > 0:
            best = nearest_code(self.vectors.detach(), z, distance=self.distance)
            local = torch.cat([best.distances[:, None], z[best.codes]], dim=1)  # [K, 1 + d]
        else:
            local = z.new_zeros((self.num_codes, 1 + self.dim))
            local[:, 0] = float("inf")
        gathered = distributed.all_gather_cat(local[None], self.process_group)  # [W, K, 1 + d]
        nearest, winner = gathered[:, :, 0].min(dim=0)
        anchors = gathered[winner, torch.arange(self.num_codes, device=z.device), 1:]
        alpha = torch.exp(-(self.usage * self.num_codes * 10.0) / (1.0 - self.decay) - 1e-3)[:, None]
        alpha = alpha * torch.isfinite(nearest)[:, None]  # no vector on any rank: codes stay where they are
        self.weight.data.mul_(1.0 - alpha).add_(anchors * alpha)
        if self.update_mode == "ema":
            self._sync_ema_sum()

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, init={self.init_mode}, update={self.update_mode}, "
            f"distance={self.distance}, restart={self.restart}"
        )
