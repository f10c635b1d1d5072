"""``QINCo``: residual quantization with implicit neural codebooks (registry: ``qinco``).

Huijben, Douze, Muckley, van Sloun, Verbeek, "Residual quantization with implicit neural codebooks", ICML
2024 (arXiv 2401.14732); the candidate pre-selection of QINCo2 (Vallaeys et al., arXiv 2501.03078) as an option.

Level 1 is a plain codebook ``C_1`` ``[K_1, d]``. Level ``m > 1`` has a base codebook ``C_m`` ``[K_m, d]`` and a
small network ``f_m`` that turns a base code ``c`` into a codeword conditioned on the partial reconstruction
``x̂ = x̂_{m-1}`` (the paper's Fig. 2; its code's ``QINCoStep``)::

    e = c + W [c; x̂] + b                    (concatenation block, W: [d, 2d])
    e = e + D_l relu(U_l e),  l = 1 .. L    (residual blocks, U_l: [h, d], D_l: [d, h], no biases)
    f_m(c, x̂) = e;    x̂_m = x̂_{m-1} + f_m(C_m[k_m], x̂_{m-1})

Encoding (greedy, as the paper): at level ``m`` the conditioned codewords of all ``K_m`` codes (or, with
``candidates=A``, of the ``A`` codes whose pre-selection codewords are nearest to the residual: QINCo2) are
compared with the residual ``z - x̂_{m-1}``; the nearest wins. Decoding walks the levels in order, and any prefix
of the codes decodes. ``encode(x, beam_size=B)`` keeps ``B`` paths (the better of beam and greedy per vector).
Cost: ``K_m`` (or ``A``) network evaluations per vector and level, ``2 L d h`` multiply-adds each.

Training (inside an autoencoder): greedy codes, then the partial sums ``x̂_m`` recomputed with gradients;
``codebook = mean_m |sg[z] - x̂_m|^2`` (the paper's loss: every level's partial-sum MSE, reaching every base
codebook and network), ``commitment = mean_m |z - sg[x̂_m]|^2`` (weight ``beta``, as ``ResidualVQ``'s), and with
``candidates`` QINCo2's ``preselect = mean_m |sg[z - x̂_{m-1}] - P_m[k_m]|^2``. ``quantized`` is ``x̂_M`` with the
straight-through gradient to ``z``, applied once to the sum as in ``ResidualQuantizer``.

``network_init="zero"`` (QINCo2's zero init) starts every level exactly as RVQ on its base codebook. Deviations
from the papers and their code (levels' losses averaged, no data normalization, ...): docs/quantizers.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import (
    check_choice,
    check_int_list,
    check_nonnegative_int,
    check_positive_int,
    check_range,
    is_int,
)
from vqkit.functional.estimators import straight_through
from vqkit.functional.qinco import best_extensions, squared_errors, take_paths
from vqkit.functional.search import nearest_code
from vqkit.quantizers.base import Quantizer, split_rate
from vqkit.quantizers.codebook import Codebook, CodebookOptions, vq_losses
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vqkit.quantizers.codebook import CodebookKwargs

NetworkInit = Literal["zero", "default"]
NETWORK_INITS = ("zero", "default")
RESTARTS = ("none", "dead")

CHUNK_BYTES = 64 * 1024 * 1024
"""Rows of a search chunk are chosen so that its candidate activations (``rows x B x A x (h + 2d)`` floats)
stay under this; compiled and exported graphs search all rows at once."""


class _Block(nn.Module):
    """``e + D relu(U e)``: one residual block of hidden width ``h`` (no biases, as the paper's code)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.down(F.relu(self.up(e)))


class ImplicitCodebook(nn.Module):
    """``f_m(c, x̂)``: one level's network from base codewords to conditioned codewords (module docstring).

    Args:
        dim: d.
        hidden_dim: h, the residual blocks' width.
        num_blocks: L.
        init: ``"zero"``: ``W``, ``b`` and every ``D_l`` zero, ``U_l`` Kaiming-uniform (QINCo2's init), so that
            ``f_m(c, x̂) == c`` exactly; ``"default"``: PyTorch's initialization of every layer (QINCo1).
    """

    def __init__(self, dim: int, hidden_dim: int, num_blocks: int, init: NetworkInit) -> None:
        super().__init__()
        self.concat = nn.Linear(2 * dim, dim)
        self.blocks = nn.ModuleList(_Block(dim, hidden_dim) for _ in range(num_blocks))
        if init == "zero":
            nn.init.zeros_(self.concat.weight)
            nn.init.zeros_(self.concat.bias)
            for block in self.blocks:
                assert isinstance(block, _Block)
                nn.init.kaiming_uniform_(block.up.weight, nonlinearity="relu")
                nn.init.zeros_(block.down.weight)

    def forward(self, codes: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Codewords for base codes ``[..., d]`` and partial reconstructions ``[..., d]`` (broadcast: ``[K, d]``
        against ``[n, b, 1, d]`` evaluates every code for every path). ``W [c; x̂]`` is computed as its two
        halves, ``W_c c + (W_x x̂ + b)``, so each half runs at its own shape."""
        d = codes.shape[-1]
        weight = self.concat.weight
        e = codes + F.linear(codes, weight[:, :d]) + F.linear(context, weight[:, d:], self.concat.bias)
        for block in self.blocks:
            e = block(e)
        return e


def _level_sizes(codebook_size: int | Sequence[int], num_quantizers: int | None) -> list[int]:
    sizes = check_int_list("codebook_size", codebook_size, minimum=2)
    if num_quantizers is None:  # as ResidualVQ: a bare size means 4 levels, a list one level per entry
        num_quantizers = 4 if is_int(codebook_size) else len(sizes)
    check_positive_int("num_quantizers", num_quantizers)
    if len(sizes) == 1:
        return sizes * num_quantizers
    if len(sizes) != num_quantizers:
        raise ValueError(f"codebook_size: expected 1 or num_quantizers={num_quantizers} sizes, got {sizes}")
    return sizes


def _options(given: dict[str, Any]) -> CodebookOptions:
    """The base codebooks' options over QINCo's default (k-means on the first batch: the paper's RQ init)."""
    options = CodebookOptions.resolve(given, init="kmeans")
    if options.update != "grad":
        raise ValueError(
            f"update: expected 'grad' (QINCo's base codes are inputs of its networks and train through the "
            f"codebook loss; an EMA of assigned residuals would ignore the network), got {options.update!r}"
        )
    if options.distance != "l2":
        raise ValueError(f"distance: expected 'l2' (the paper's squared error), got {options.distance!r}")
    check_choice("restart", options.restart, RESTARTS)
    return options


@register_quantizer("qinco")
class QINCo(Quantizer):
    """QINCo: ``[..., D]`` -> codes ``[..., num_quantizers]`` from implicit, conditioned codebooks.

    Args:
        dim: D (the levels work at ``D``; there is no projection).
        codebook_size: base codes per level, one size or one per level.
        num_quantizers: M, the levels (default ``len(codebook_size)``, or 4 for one size).
        hidden_dim: h, width of the residual blocks (the paper: 256).
        num_blocks: L, residual blocks per level (the paper: up to 16; QINCo2-S: 2).
        candidates: A, QINCo2's pre-selection: levels ``m > 1`` evaluate only the ``A`` codes whose
            pre-selection codewords ``P_m`` are nearest to the residual (``P_m`` starts as ``C_m`` and trains by
            the ``preselect`` loss); ``None`` (default) or ``A >= K_m`` evaluates all codes.
        network_init: ``"zero"`` (default: every level starts as RVQ) or ``"default"`` (PyTorch's init).
        beta: weight of ``commitment``.
        layout, allow_nonfinite: see ``Quantizer``.
        **codebook_options: options of the base codebooks (``Codebook``): ``init`` (default ``"kmeans"``:
            residual k-means on the first training batch), ``kmeans_iters``, ``kmeans_seed``, ``restart``
            (``"none"`` or ``"dead"``) and its constants; ``update`` must be ``"grad"`` and ``distance`` ``"l2"``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int] = 256,
        num_quantizers: int | None = None,
        *,
        hidden_dim: int = 64,
        num_blocks: int = 2,
        candidates: int | None = None,
        network_init: NetworkInit = "zero",
        beta: float = 0.25,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **codebook_options: Unpack[CodebookKwargs],
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        sizes = _level_sizes(codebook_size, num_quantizers)
        self.codebook_size = sizes if len(set(sizes)) > 1 else sizes[0]
        self.num_quantizers = len(sizes)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.num_blocks = check_nonnegative_int("num_blocks", num_blocks)
        self.candidates = None if candidates is None else check_positive_int("candidates", candidates)
        self.network_init: NetworkInit = check_choice("network_init", network_init, NETWORK_INITS)  # type: ignore[assignment]
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.codebook_options = _options(dict(codebook_options))
        self.codebooks = nn.ModuleList(Codebook(k, dim, self.codebook_options) for k in sizes)
        self.networks = nn.ModuleList(
            ImplicitCodebook(dim, self.hidden_dim, self.num_blocks, self.network_init) for _ in sizes[1:]
        )
        # Pre-selection codebooks P_m (QINCo2's substep codebooks), keyed by level, where A < K_m.
        self.preselect = nn.ParameterDict(
            {
                str(m): nn.Parameter(self.codebook_list[m].weight.detach().clone())
                for m in range(1, len(sizes))
                if self.candidates is not None and self.candidates < sizes[m]
            }
        )

    # ------------------------------------------------------------------ description
    @property
    def codebook_list(self) -> list[Codebook]:
        return [cb for cb in self.codebooks if isinstance(cb, Codebook)]

    @property
    def network_list(self) -> list[ImplicitCodebook]:
        return [net for net in self.networks if isinstance(net, ImplicitCodebook)]

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Two levels of ``ceil(R/2)`` and ``floor(R/2)`` bits (one level, a plain codebook, for one bit)."""
        parts = split_rate(bits)
        return {"codebook_size": [2**b for b in parts], "num_quantizers": len(parts)}

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return tuple(cb.num_codes for cb in self.codebook_list)

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = {"commitment": self.beta, "codebook": 1.0}
        return {**weights, "preselect": 1.0} if len(self.preselect) else weights

    @property
    def num_codebook_parameters(self) -> int:
        """Base and pre-selection codebooks and the networks: everything that defines the implicit codebooks."""
        return sum(p.numel() for p in self.parameters())

    def search_cost(self) -> tuple[int, int] | None:
        """Per vector: level 1 is a VQ search; level ``m > 1`` evaluates ``A_m`` candidates (``2 L d h`` in the
        blocks, ``d`` for the error, ``d^2`` for the code half of ``W`` when candidates are pre-selected per
        vector), plus ``d^2`` for the context half and ``K_m d`` for a pre-selection. Candidates: the codewords
        whose error is computed."""
        d, sizes = self.dim, self.alphabet_sizes
        macs, count = sizes[0] * d, sizes[0]
        for m in range(1, len(sizes)):
            chosen = self._evaluated(m)
            per_candidate = 2 * self.num_blocks * d * self.hidden_dim + d
            if str(m) in self.preselect:
                per_candidate += d * d
                macs += sizes[m] * d
            macs += chosen * per_candidate + d * d
            count += chosen
        return macs, count

    def _evaluated(self, m: int) -> int:
        """Candidates evaluated at level ``m``."""
        size = self.alphabet_sizes[m]
        return min(size, self.candidates) if m > 0 and self.candidates is not None else size

    @property
    def num_levels(self) -> int:
        return self.num_quantizers

    def level_widths(self) -> tuple[int, ...]:
        return tuple(range(1, self.num_quantizers + 1))

    # ------------------------------------------------------------------ initialization
    @property
    def needs_warm_start(self) -> bool:
        return self.codebook_options.init == "kmeans" and not all(
            cb.is_initialized() for cb in self.codebook_list
        )

    def warm_start(self, z: torch.Tensor) -> None:
        if self.needs_warm_start:
            self._fit(z, force=False)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Residual k-means (the paper's RQ initialization) of the base codebooks on ``vectors`` ``[N, D]``."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected [N, {self.dim}], got {tuple(vectors.shape)}")
        self._fit(vectors.to(self.compute_dtype), force=True)

    @torch.no_grad()
    def _fit(self, z: torch.Tensor, force: bool) -> None:
        """RQ k-means level by level: each base codebook fits what plain RVQ on the earlier base codebooks
        leaves (the networks play no part, as in the paper); pre-selection codebooks start as copies."""
        residual = z.detach()
        for m, cb in enumerate(self.codebook_list):
            if force or not cb.is_initialized():
                cb.initialize_from(residual, force=True)
                if str(m) in self.preselect:
                    self.preselect[str(m)].data.copy_(cb.weight)
            residual = residual - cb.lookup(cb.search(residual))

    # ------------------------------------------------------------------ search
    @torch.no_grad()
    def search(self, z: torch.Tensor, num_levels: int | None = None, beam_size: int = 1) -> torch.Tensor:
        """Codes ``[N, num_levels]`` of ``z`` ``[N, D]`` (default all levels): greedy, or ``beam_size`` paths."""
        levels = num_levels or self.num_levels
        if torch.compiler.is_compiling() or z.shape[0] == 0:
            return self._search_rows(z, levels, beam_size)
        widest = max(self._evaluated(m) for m in range(levels))
        width = beam_size * widest * (self.hidden_dim + 2 * self.dim) * z.element_size()
        rows = max(1, CHUNK_BYTES // width)
        return torch.cat([self._search_rows(part, levels, beam_size) for part in z.split(rows)])

    def _search_rows(self, z: torch.Tensor, levels: int, beam_size: int) -> torch.Tensor:
        n, d = z.shape
        x_hat = z.new_zeros(n, 1, d)  # [n, b, d]: each path's partial reconstruction
        paths = torch.zeros(n, 1, 0, dtype=torch.long, device=z.device)  # [n, b, levels so far]
        for m in range(levels):
            residual = z[:, None] - x_hat
            ids, words = self._candidates(m, residual, x_hat)  # [n, b, a], [n, b, a, d]
            best = best_extensions(squared_errors(residual, words), beam_size)  # [n, b'] into b * a
            b, a = ids.shape[1:]
            parent = torch.div(best, a, rounding_mode="floor")
            x_hat = take_paths(x_hat, parent) + take_paths(words.reshape(n, b * a, d), best)
            code = ids.reshape(n, b * a).gather(1, best)
            paths = torch.cat([take_paths(paths, parent), code[..., None]], dim=2)
        return paths[:, 0]

    def _candidates(
        self, m: int, residual: torch.Tensor, x_hat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Level ``m``'s candidate codes ``[n, b, a]`` and conditioned codewords ``[n, b, a, d]`` for paths with
        residuals and partial reconstructions ``[n, b, d]``."""
        n, b, d = residual.shape
        base = self.codebook_list[m].vectors
        size = base.shape[0]
        ids = torch.arange(size, device=base.device).expand(n, b, size)
        if m == 0:
            return ids, base.expand(n, b, size, d)
        pre = self.preselect.get(str(m))
        if pre is not None:
            a = self._evaluated(m)
            ids = nearest_code(residual.reshape(-1, d), pre.detach(), k=a).codes.reshape(n, b, a)
            base = F.embedding(ids, base)
        words = self.network_list[m - 1](base, x_hat[:, :, None])
        return ids, words.expand(n, b, ids.shape[2], d)

    # ------------------------------------------------------------------ contract
    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        if self.training and self.needs_warm_start:
            self.warm_start(z)
        codes = self.search(z)
        partials = self._partials(codes)
        losses = self._losses(z, codes, partials)
        if self.training:
            self._update(z, codes, partials)
        return QuantizerOutput(quantized=straight_through(partials[-1], z), codes=codes, losses=losses)

    def _losses(
        self, z: torch.Tensor, codes: torch.Tensor, partials: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``codebook`` and ``commitment``: means over levels of every partial sum's pair; ``preselect``."""
        pairs = [vq_losses(z, x_hat) for x_hat in partials]
        losses = {name: torch.stack([p[name] for p in pairs]).mean() for name in ("commitment", "codebook")}
        if len(self.preselect):
            terms = [
                F.mse_loss(F.embedding(codes[:, int(m)], pre), (z - partials[int(m) - 1]).detach())
                for m, pre in self.preselect.items()
            ]
            losses["preselect"] = torch.stack(terms).mean()
        return losses

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor, partials: list[torch.Tensor]) -> None:
        """Every base codebook's statistics and restart rule, on its level's residuals; a restarted base code
        also restarts its pre-selection code (else it could never be pre-selected again)."""
        for m, cb in enumerate(self.codebook_list):
            residual = z if m == 0 else z - partials[m - 1]
            pre = self.preselect.get(str(m))
            before = cb.weight.detach().clone() if pre is not None and cb.options.restart != "none" else None
            cb.update(residual.detach(), codes[:, m])
            if pre is not None and before is not None:
                moved = (cb.weight != before).any(dim=1, keepdim=True)
                pre.data.copy_(torch.where(moved, cb.weight.detach(), pre))

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self.search(z)

    def _encode_levels(self, z: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        return self.search(z, num_quantizers)

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        check_positive_int("beam_size", beam_size)
        beam = self.search(z, num_quantizers, beam_size)
        greedy = self.search(z, num_quantizers)
        # As ResidualQuantizer: a beam can prune the greedy path, so the better of the two per vector.
        beam_error, greedy_error = ((z - self._decode(c)).square().sum(-1) for c in (beam, greedy))
        return torch.where((beam_error > greedy_error)[:, None], greedy, beam)

    def _partials(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """``[x̂_1, ..., x̂_k]`` ``[N, D]`` for the codes ``[N, k]`` of the first ``k`` levels."""
        x_hat = self.codebook_list[0].lookup(codes[:, 0])
        partials = [x_hat]
        for m in range(1, codes.shape[1]):
            x_hat = x_hat + self.network_list[m - 1](self.codebook_list[m].lookup(codes[:, m]), x_hat)
            partials.append(x_hat)
        return partials

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """All levels' codes, or the first levels' (a prefix from ``encode(x, num_quantizers=k)``)."""
        return self._partials(codes)[-1]
