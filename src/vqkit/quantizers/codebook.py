"""Codebook storage, search and update, shared by every codebook-based quantizer.

A ``Codebook`` holds ``K`` codes of dimension ``d`` and knows how to

* initialize them: ``"uniform"`` U(-1/K, 1/K) (VQ-VAE / taming), ``"gaussian"`` N(0, 1/d) (so |c| ≈ 1; the
  SimVQ choice), or ``"kmeans"``: k-means++ and Lloyd on the first training batch, gathered over ranks
  (SoundStream / Encodec practice);
* search them (the shared chunked kernel, ``"l2"`` or ``"cosine"``) and look codes up;
* update them after each training step by its update rule (``"grad"`` or ``"ema"``) and restart unused codes
  by its restart rule (``"none"``, ``"dead"``, ``"anchor"``): strategy objects of ``codebook_rules``, chosen
  once at construction.

Its options are one ``CodebookOptions`` value. Quantizers that own codebooks (VQ, LooC, IVQ) take them as
keyword arguments (``**codebook_options``, typed by ``CodebookKwargs``) over their own defaults, store the
resolved ``CodebookOptions`` and hand it on; their configs list every option.

Counts start at one ("each code seen once"): with zero, as in Encodec without k-means, the first EMA step
divides unused codes' sums by ~eps and blows them up. The EMA of per-batch frequencies (CVQ anchors) starts at
zero, as in CVQ, so the first anchor step moves every code onto data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Protocol, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed
from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.distributed import ProcessGroup
from vqkit.functional.kmeans import kmeans
from vqkit.functional.search import nearest_code
from vqkit.functional.vq_loss import loss_pair
from vqkit.quantizers.codebook_rules import RESTART_RULES, UPDATE_RULES, Nearest
from vqkit.types import Distance

Init = Literal["uniform", "gaussian", "kmeans"]
Update = Literal["grad", "ema"]
Restart = Literal["none", "dead", "anchor"]
RestartMeasure = Literal["count", "share"]

INITS = ("uniform", "gaussian", "kmeans")
UPDATES = tuple(UPDATE_RULES)
RESTARTS = tuple(RESTART_RULES)
DISTANCES = ("l2", "cosine")


class CodeSpace(Protocol):
    """A re-parameterization of a codebook's stored codes (``vqkit.quantizers.code_affine.CodeAffine``): ``table``
    maps the stored codes ``[K, d]`` to what they decode to; ``to_stored`` maps input vectors ``[N, d]`` into the
    stored codes' space, where k-means, EMA statistics and restarts work."""

    def table(self, vectors: torch.Tensor) -> torch.Tensor: ...

    def to_stored(self, z: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor: ...


class CodebookKwargs(TypedDict, total=False):
    """The keyword arguments of ``CodebookOptions``, for typing a quantizer's ``**codebook_options``."""

    init: Init
    update: Update
    distance: Distance
    restart: Restart
    decay: float
    eps: float
    restart_threshold: float
    restart_measure: RestartMeasure
    kmeans_iters: int
    kmeans_seed: int


@dataclass(frozen=True)
class CodebookOptions:
    """A ``Codebook``'s strategies and constants (everything but its size and ``normalize``); checked on creation.

    Attributes:
        init: ``"uniform"``, ``"gaussian"`` or ``"kmeans"`` (first training batch).
        update: ``"grad"`` (optimizer + ``codebook`` loss) or ``"ema"`` (moving averages, no ``codebook`` loss).
        distance: ``"l2"`` or ``"cosine"`` matching (cosine returns the raw code, as CVQ).
        restart: ``"none"``, ``"dead"`` (EMA count under ``restart_threshold``) or ``"anchor"`` (CVQ).
        decay: EMA decay of counts, sums and usage frequencies.
        eps: Laplace smoothing of EMA counts.
        restart_threshold: under it a code is dead: an EMA assignment count per training batch
            (``restart_measure="count"``), or a share of uniform use, ``restart_threshold / K`` of the
            assignments (``"share"``: independent of the batch size, as Mimi).
        restart_measure: ``"count"`` (Encodec) or ``"share"`` (Mimi), see ``restart_threshold``.
        kmeans_iters: Lloyd iterations for ``init="kmeans"``.
        kmeans_seed: seed of the k-means++ generator (the same on every rank).
    """

    init: Init = "uniform"
    update: Update = "grad"
    distance: Distance = "l2"
    restart: Restart = "none"
    decay: float = 0.99
    eps: float = 1e-5
    restart_threshold: float = 1.0
    restart_measure: RestartMeasure = "count"
    kmeans_iters: int = 10
    kmeans_seed: int = 0

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
            "restart_measure": check_choice("restart_measure", self.restart_measure, ("count", "share")),
            "kmeans_iters": int(check_range("kmeans_iters", self.kmeans_iters, 0, 10_000)),
            "kmeans_seed": int(check_range("kmeans_seed", self.kmeans_seed, 0, 2**63 - 1)),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def resolve(cls, given: Mapping[str, Any], **defaults: Any) -> CodebookOptions:
        """``given`` (a quantizer's ``**codebook_options``) over the quantizer's ``defaults`` over the
        library's; an unknown name is a ``TypeError`` that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(
                f"{unknown[0]}: unexpected keyword argument; codebook options are {sorted(known)}"
            )
        return replace(cls(**defaults), **given)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def vq_losses(z: torch.Tensor, q: torch.Tensor, *, codebook_term: bool = True) -> dict[str, torch.Tensor]:
    """The VQ-VAE pair, unweighted means over elements: ``commitment = |z - sg q|^2`` (moves the encoder) and
    ``codebook = |sg z - q|^2`` (moves a gradient-trained codebook; omitted for EMA codebooks). Computed now
    even without a gradient: deferring them (``terms_unless_grad``) would hold ``z`` and ``q`` ``[N, d]`` until
    the result is dropped, a pair per level of a residual quantizer."""
    if not codebook_term:
        return {"commitment": F.mse_loss(z, q.detach())}
    # The two terms have one value and differ only in where the gradient goes: one difference serves both
    # (without autograd, one mse pass).
    needs_grad = torch.is_grad_enabled() and (z.requires_grad or q.requires_grad)
    if not needs_grad:
        commitment = F.mse_loss(z, q)
        return {"commitment": commitment, "codebook": commitment}
    commitment, codebook = loss_pair(z, q)
    return {"commitment": commitment, "codebook": codebook}


class Codebook(nn.Module):
    """``K`` codes of dimension ``d`` with init, search, lookup and update rules (see module docstring).

    Args:
        num_codes: K.
        dim: d.
        options: strategies and constants (``CodebookOptions``); ``**overrides`` replace single fields.
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
        options: CodebookOptions | None = None,
        *,
        normalize: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.num_codes = check_positive_int("codebook_size", num_codes)
        self.dim = check_positive_int("codebook_dim", dim)
        self.options = CodebookOptions.resolve(overrides, **(options or CodebookOptions()).as_dict())
        self.update_rule = UPDATE_RULES[self.options.update]()
        self.restart_rule = RESTART_RULES[self.options.restart]()
        self.normalize = bool(normalize)
        self.process_group: ProcessGroup | None = None
        self.update_rule.create(self, self._initial_weight())
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("initialized", torch.tensor(self.options.init != "kmeans"))
        # A host-side copy of ``initialized`` once it is true: reading the buffer on every training step is a
        # device-to-host sync on GPU. Reset when a state dict is loaded (it may hold an uninitialized codebook).
        self._known_initialized = False
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._deferred: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def distance(self) -> Distance:
        return self.options.distance

    def _initial_weight(self) -> torch.Tensor:
        if self.options.init == "uniform":
            return torch.empty(self.num_codes, self.dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)
        # "gaussian", and the placeholder of "kmeans" until the first batch arrives.
        return torch.randn(self.num_codes, self.dim) * self.dim**-0.5

    # ------------------------------------------------------------------ read
    @property
    def vectors(self) -> torch.Tensor:
        """The effective codes ``[K, d]`` (normalized when ``normalize``)."""
        return F.normalize(self.weight, dim=-1) if self.normalize else self.weight

    def table(self, space: CodeSpace | None = None) -> torch.Tensor:
        """What the codes decode to ``[K, d]``: ``vectors``, or their re-parameterization by ``space``."""
        return self.vectors if space is None else space.table(self.vectors)

    def search(self, z: torch.Tensor, space: CodeSpace | None = None) -> torch.Tensor:
        """Nearest code of each row of ``z`` ``[N, d]`` -> ``[N]`` int64."""
        return nearest_code(z.detach(), self.table(space).detach(), distance=self.distance).codes

    def search_for_update(self, z: torch.Tensor) -> tuple[torch.Tensor, Nearest | None]:
        """The search of ``z`` ``[N, d]`` (stored codes) before ``update(z, codes, nearest)``: codes ``[N]``, and
        in training each code's nearest row of ``z`` where the restart rule reads it (CVQ's anchors) and the
        codes stay put until then (``update="grad"``: the optimizer moves them after the step). Those come
        from the same score tiles (``nearest_code(..., nearest_rows=True)``), so the restart does not search
        a second time; an EMA update moves the codes first, and its anchors search the moved codes. Otherwise
        (and outside training) ``(search(z), None)``."""
        if not self.training or self.restart_rule.name != "anchor" or self.update_rule.name != "grad":
            return self.search(z), None
        found = nearest_code(z.detach(), self.vectors.detach(), distance=self.distance, nearest_rows=True)
        assert found.code_distances is not None and found.code_rows is not None
        return found.codes, (found.code_distances, found.code_rows)

    def lookup(self, codes: torch.Tensor, space: CodeSpace | None = None) -> torch.Tensor:
        """``[N]`` -> ``[N, d]`` (differentiable w.r.t. the codebook when ``update="grad"``)."""
        return F.embedding(codes, self.table(space))

    def losses(self, z: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
        """The VQ-VAE pair for inputs ``z`` and their looked-up codes ``q`` (``codebook`` for grad updates)."""
        return vq_losses(z, q, codebook_term=self.update_rule.codebook_loss)

    def quantize(
        self, z: torch.Tensor, codes: torch.Tensor | None = None, *, space: CodeSpace | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The VQ step on ``z`` ``[N, d]``: k-means init (first training batch), nearest codes (unless ``codes``
        ``[N]`` are given), the looked-up codes ``q`` ``[N, d]`` (differentiable w.r.t. the codebook), the loss
        pair, and in training the statistics / EMA / restart update. Returns ``(codes, q, losses)``.

        ``space`` re-parameterizes the codes (``VQ``'s affine codes): search, lookup and losses use
        ``table(space)``; k-means, statistics and restarts see ``space.to_stored(z, vectors)``."""
        stored = z if space is None or not self.training else space.to_stored(z, self.vectors)
        if self.training:
            self.warm_start(stored)
        nearest = None
        if codes is None and space is None:
            codes, nearest = self.search_for_update(z)
        elif codes is None:
            codes = self.search(z, space)
        q = self.lookup(codes, space)
        losses = self.losses(z, q)
        if self.training:
            self.update(stored, codes, nearest)
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

    def warm_start(self, z: torch.Tensor) -> None:
        """k-means on ``z`` if this codebook waits for its first batch (``init="kmeans"``); else nothing."""
        if self.options.init == "kmeans" and not self.is_initialized():
            self.initialize_from(z)

    @torch.no_grad()
    def initialize_from(self, z: torch.Tensor, *, force: bool = False) -> None:
        """k-means init from ``z`` gathered over ranks (the same result on every rank): once, when not yet
        initialized, or again with ``force`` (k-means from a pretrained encoder); call it on every rank."""
        if not force and self.is_initialized():
            return
        data = distributed.all_gather_cat(z.detach().to(self.weight.dtype), self.process_group)
        generator = torch.Generator(device=data.device).manual_seed(self.options.kmeans_seed)
        result = kmeans(
            data, self.num_codes, iters=self.options.kmeans_iters, distance=self.distance, generator=generator
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
        self.update_rule.sync(self)

    def smoothed_counts(self) -> torch.Tensor:
        """Laplace-smoothed EMA counts ``[K]``, with the same total as the raw ones."""
        n = self.cluster_size.sum()
        eps = self.options.eps
        return (self.cluster_size + eps) / (n + self.num_codes * eps) * n.clamp(min=eps)

    @contextmanager
    def deferred_updates(self) -> Iterator[None]:
        """Collect the ``update`` calls made inside the block and apply them as one update on exit, on all their
        vectors together: a codebook shared by several residual levels (RQ-VAE) moves once per step, with
        every level's assignments in one EMA step, not once per level."""
        if self._deferred is not None:  # already collecting (nested): the outer block applies them
            yield
            return
        self._deferred = []
        try:
            yield
            pending = self._deferred
        finally:
            self._deferred = None
        if pending:
            self.update(torch.cat([z for z, _ in pending]), torch.cat([c for _, c in pending]))

    @torch.no_grad()
    def update(
        self,
        z: torch.Tensor,
        codes: torch.Tensor,
        nearest: Nearest | None = None,
        *,
        counts: torch.Tensor | None = None,
    ) -> None:
        """After a training step's lookup: statistics (all-reduced), the update rule, then the restart rule
        (inside ``deferred_updates``: recorded, and applied with the others at the end of the block).

        Args:
            z: ``[N, d]`` the vectors that were quantized (in the codebook's space).
            codes: ``[N]`` their codes.
            nearest: ``search_for_update``'s per-code nearest rows of this ``z``, for the restart rule.
            counts: ``[K]`` this process's counts of ``codes``, when the caller has counted them already (not
                changed; counted here otherwise).
        """
        if self._deferred is not None:  # the merged batch's rows are not these: its restart searches again
            # A copy: the one-pass residual forward updates its residual in place after this level.
            self._deferred.append((z.detach().clone(), codes))
            return
        z = z.detach().to(self.weight.dtype)
        counts, sums = self.update_rule.statistics(self, z, codes, counts)
        weight = 1.0 - self.options.decay
        self.cluster_size.lerp_(counts, weight)
        self.usage.lerp_(counts / counts.sum().clamp(min=1.0), weight)
        self.update_rule.move(self, sums)
        self.step.add_(1)
        self.restart_rule.apply(self, z, nearest)
        if self.restart_rule.name != "none":
            self.update_rule.sync(self)

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, init={o.init}, update={o.update}, "
            f"distance={o.distance}, restart={o.restart}"
        )
