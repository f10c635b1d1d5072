"""``IVQ``: IChing vector quantization, tiny structured codebooks composed from binary lines ("Structured and
Lightweight Vector Quantization via Binary Hierarchical Composition Inspired by IChing", OpenReview
Y3cUZ8fNnu; authors' code github.com/chouliuzuo/IVQ). Vocabulary and index mapping: ``vqkit.functional.hexagram``
and ``docs/ivq.md``.

A vector of dimension ``D`` goes through residual **levels**. A level with ``blocks`` blocks splits the residual
into ``blocks`` contiguous chunks of ``D / blocks`` dims and quantizes each against a codebook of
``2 ** (L / blocks)`` codes, by default **one codebook shared by all blocks of the level** (``codebooks=
"per_block"`` gives each block its own: the paper's "hybrid RVQ + PVQ", 104 codes for ``bottom-up``). The blocks'
codes concatenate into one hexagram index in ``[0, 2**L)`` per level, so a vector is ``levels`` hexagram indices and
``bits_per_vector = levels * L``: a ``yin-yang`` IVQ (four levels of two codes, ``L = 6``) is 24 bits, the rate of
residual VQ 4×64, from 8 stored codes of ``D / 6`` dims.

Layout presets (``levels=``): ``"yin-yang"`` is ``[(2, L)] * 4``; ``"bottom-up"`` goes from the finest blocks to
one block, ``[(2, 6), (4, 3), (8, 2), (64, 1)]`` for ``L = 6`` (for any ``L``: every divisor of ``L`` as the
block size, ascending); ``"top-down"`` is its reverse. Section 3.2.2 and the authors' vision code call the
fine-to-coarse order bottom-up; Algorithm 1 and Appendix A call the reverse order bottom-up; vqkit follows
section 3.2.2 and the code. Any list of ``(codes, blocks)`` whose blocks divide ``L`` is accepted.

Quantization: nearest code by squared L2 (``distance="cosine"`` compares directions and returns the raw code, as
CVQ). With two codes per codebook the nearest-code test is one dot product per block against ``c1 - c0``
(``x . (c1 - c0) > (|c1|^2 - |c0|^2) / 2``), with ties to code 0 like the generic search. Every level's output is
detached before it is subtracted from the residual and the straight-through estimator is applied once, to the
sum (``ResidualQuantizer``; the authors' fix of Encodec issue #25). Codebooks are k-means initialized on the
first training batch (``kmeans_iters=5`` as the authors' RVQ). Per level, ``commitment = |r - sg q|^2`` (weight
``beta``) and ``codebook = |sg r - q|^2`` (weight ``codebook_weight``); the losses are averaged over levels.

Structure losses (section 3.2.2-3.2.3), each returned unweighted under its own name so the paper's ablations
are configuration: with ``H_l`` the **hexagram table** of level ``l`` (row ``h`` is what hexagram ``h`` decodes to
at that level, ``[2**L, D]``) and ``g(A, B)`` the symmetric CLIP cross-entropy of
``vqkit.functional.contrastive`` (``similarity`` and ``temperature``):

* ``hierarchy`` = sum over level pairs ``a < b`` of ``g(H_a, H_b)`` (6 pairs for 4 levels): a hexagram means the
  same at every granularity;
* ``zong`` = ``g(f(H)[zong], H)`` with ``f`` the reversal of the feature axis (``zong_flip="features"``, the
  authors' code) or of the block order only (``zong_flip="blocks"``; ``hexagram.zong_flip``);
  ``cuo`` = ``-g(H, H[cuo])``; ``cuozong`` = ``g(H, H[cuozong])``; each the mean over ``relation_levels`` (the
  authors use the first level only).

"w.o. hierarchy" is ``hierarchy_weight=0``, "w.o. structure" is ``relation_weight=0``, both is "w.o. hier&stru";
a term whose weight is 0 is not computed. With more than ``structure_rows`` hexagrams (``L > 10`` by default)
each call draws that many distinct hexagrams at random and the terms are computed on them: at ``L = 12`` the full
terms are nine 4,096 x 4,096 contrastive matrices (``docs/ivq.md`` has the cost).

Search: ``search`` is ``vqkit.functional.block_search.residual_block_search`` over the levels' codebooks, the
joint search of ``ResidualQuantizer``'s hook, shared by ``forward`` and ``encode``. The training forward is one
pass down the levels (``_joint_forward``: the residual updated in place, the loss pair and the estimator from
``block_search.vq_loss_pair``), the composite's per-level forward with the same codes, values and updates (a
test compares them); quantizer dropout and ``gradient="stages"`` take the per-level forward itself.

Deviations, each deliberate (see ``docs/ivq.md``):

* ``hierarchy`` and the relation terms use ``g`` = the symmetric softmax cross-entropy (CLIP), not the paper's
  Eq. 9 ratio ``-sum_i s_ii / sum_j s_ij`` of raw similarities: with cosines the denominator can be 0 or
  negative, where the ratio is undefined or changes sign, so Eq. 9 as printed is ill-posed; the cross-entropy
  (the authors' code, and the InfoNCE form the paper cites) is its well-posed repair, a different objective.
* ``zong_flip="features"`` (default, the authors' code) flips the whole feature axis, which also reverses the
  dims inside each block: on the first level of ``yin-yang`` / ``bottom-up`` (one-line blocks, one shared
  codebook) the term is minimized only by palindromic codes (``reversed(c) = c``), so the level-0 codes keep
  about half of their ``D / blocks`` dims, and for palindromic codes the term is ``g(H, H)``, a pure spreading
  term. The paper's Eq. 10 asks ``h(f(c), C) = f(h(c, C))``, which a shared codebook meets exactly with the block
  order reversed: ``zong_flip="blocks"`` is that reading (the term is then ``g(H, H)`` at level 0 without the
  constraint; with multi-line blocks or per-block codebooks it ties code ``k`` of block ``j`` to code ``rev(k)``
  of block ``B - 1 - j``). Measured in ``tests/test_ivq_zong.py`` and ``docs/quantizers.md``.
* Default ``similarity="cosine"`` with ``temperature=0.1``: the paper's Eq. 9 uses cosine similarity; the
  authors' code uses raw dot products without temperature (``similarity="dot", temperature=1.0`` reproduces
  it). With dot products the negated cuo term is unbounded below and can be lowered by inflating the codebooks;
  with cosine logits every term is bounded, and a test trains with the defaults and checks that nothing diverges.
* Default structure weights are 0.1 (the authors add the terms with weight 1, averaged with the commitment terms
  in their audio code). With cosine logits at temperature 0.1 each term is O(10) against per-element MSE terms
  O(0.1-1); at weight 1 the structure gradients dominate Adam's normalized codebook steps, the codebooks stop
  following the encoder and its outputs drift (a linear encoder on Gaussian data: output std 0.6 -> 6,
  commitment 0.2 -> 35 in 1,000 steps); at 0.1 the terms still reach their optima and reconstruction is within
  10% of the run without them (``docs/ivq.md`` has the table).
* Default losses are the VQ-VAE pair (``beta=0.25``, ``codebook_weight=1``), as the authors' vision code; their
  audio code uses ``commitment`` only, weight 1, so its codebooks learn only through the structure losses
  (``beta=1.0, codebook_weight=0.0``).
* Hexagram indices follow the line order (first line most significant); the authors' audio code relabels them in
  King Wen order, a permutation that changes nothing else and is not offered.
* Matching with ``distance="cosine"`` returns the raw code; the authors' vision code normalizes both sides and
  returns the normalized code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch

from vqkit._validate import check_choice, check_int, check_positive_int, check_range, is_int
from vqkit.functional import hexagram
from vqkit.functional.block_search import level_outputs, residual_block_search
from vqkit.functional.contrastive import SIMILARITIES, Similarity, symmetric_contrastive
from vqkit.functional.estimators import Gradient
from vqkit.functional.hexagram import ZongFlip
from vqkit.quantizers.codebook import CodebookOptions
from vqkit.quantizers.composite import ResidualQuantizer
from vqkit.quantizers.ivq_level import Codebooks, IVQLevel, level_statistics, resolve_levels
from vqkit.quantizers.ivq_structure import (
    Terms,
    full_plan,
    layout_of,
    make_plan,
    structure_losses,
    unit_bank,
)
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vqkit.quantizers.codebook import CodebookKwargs

RelationTerm = Literal["zong", "cuo", "cuozong"]
RELATION_TERMS: tuple[RelationTerm, ...] = ("zong", "cuo", "cuozong")
MAX_LINES = 24


def _layout(dim: int, levels: str | Sequence[Sequence[int]], lines: int) -> tuple[tuple[int, int], ...]:
    """The checked ``(codes, blocks)`` of every level, for ``dim`` and ``lines``."""
    expected = f"an even integer in [2, {MAX_LINES}]"
    check_int("lines", lines, choices=range(2, MAX_LINES + 1, 2), expected=expected)
    check_positive_int("dim", dim)
    pairs = resolve_levels(levels, lines)
    if any(dim % blocks for _, blocks in pairs):
        raise ValueError(
            f"dim: expected a multiple of every level's blocks {[b for _, b in pairs]}, got dim={dim}"
        )
    return pairs


@register_quantizer("ivq")
class IVQ(ResidualQuantizer):
    """IChing VQ: ``[..., D]`` -> codes ``[..., levels]``, one hexagram index in ``[0, 2**L)`` per level.

    Args:
        dim: D; every level's ``blocks`` must divide it.
        levels: ``"yin-yang"`` (default), ``"bottom-up"``, ``"top-down"``, or a list of ``(codes, blocks)``.
        lines: L, lines per hexagram (6: the 64 hexagrams; 4 and 12 are the paper's other variants).
        codebooks: ``"shared"`` (IVQ: one codebook per level) or ``"per_block"`` (hybrid RVQ + PVQ).
        beta: weight of ``commitment``. codebook_weight: weight of ``codebook``.
        gradient: ``"ste"`` or ``"rotation"`` (the rotation trick onto the summed levels); the value is the same.
        dropout: quantizer dropout over the levels (``ResidualQuantizer``); ``encode(x, num_quantizers=k)``.
        hierarchy_weight: weight of ``hierarchy``. relation_weight: weight of each of ``relation_terms``.
        relation_terms: which of ``"zong"``, ``"cuo"``, ``"cuozong"`` to compute.
        relation_levels: the levels (0-based) the relation terms apply to, or ``"all"``.
        similarity, temperature: the contrastive logits (``"cosine"`` or ``"dot"``, divided by ``temperature``).
        zong_flip: ``f`` of the zong term: ``"features"`` (the authors' code: the whole feature axis) or
            ``"blocks"`` (the block order only, no reversal inside a block); see the module docstring.
        structure_rows: the most hexagrams a structure term is computed on per call (sampled beyond it).
        layout, allow_nonfinite: see ``Quantizer``.
        **codebook_options: every codebook's strategies (``CodebookOptions``), over IVQ's defaults
            ``init="kmeans"``, ``kmeans_iters=5`` (the authors' RVQ); ``update="ema"`` needs the structure
            weights at 0.
    """

    joint_search: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        levels: str | Sequence[Sequence[int]] = "yin-yang",
        *,
        lines: int = 6,
        codebooks: Codebooks = "shared",
        beta: float = 0.25,
        gradient: Gradient = "ste",
        dropout: float = 0.0,
        codebook_weight: float = 1.0,
        hierarchy_weight: float = 0.1,
        relation_weight: float = 0.1,
        relation_terms: Sequence[RelationTerm] = RELATION_TERMS,
        relation_levels: Sequence[int] | Literal["all"] = (0,),
        similarity: Similarity = "cosine",
        temperature: float = 0.1,
        zong_flip: ZongFlip = "features",
        structure_rows: int = 1024,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **codebook_options: Unpack[CodebookKwargs],
    ) -> None:
        pairs = _layout(dim, levels, lines)
        self.levels = levels if isinstance(levels, str) else [list(pair) for pair in pairs]
        self.lines = lines
        self.level_layout = pairs
        self.codebooks: Codebooks = check_choice("codebooks", codebooks, ("shared", "per_block"))  # type: ignore[assignment]
        self._set_weights(beta, codebook_weight, hierarchy_weight, relation_weight)
        self._set_structure(
            relation_terms, relation_levels, similarity, temperature, structure_rows, len(pairs)
        )
        self.zong_flip: ZongFlip = check_choice("zong_flip", zong_flip, hexagram.ZONG_FLIPS)  # type: ignore[assignment]
        self.codebook_options = CodebookOptions.resolve(codebook_options, init="kmeans", kmeans_iters=5)
        if self.codebook_options.update == "ema" and (self.hierarchy_weight > 0 or self.relation_weight > 0):
            raise ValueError(
                "update: 'ema' codebooks are buffers and cannot learn from the structure losses; "
                "pass hierarchy_weight=0 and relation_weight=0 with update='ema', or update='grad'"
            )
        stages = [
            IVQLevel(dim, lines, blocks, codebooks=self.codebooks, options=self.codebook_options)
            for _, blocks in pairs
        ]
        super().__init__(
            dim,
            stages,
            gradient=gradient,
            dropout=dropout,
            layout=layout,
            allow_nonfinite=allow_nonfinite,
        )

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """``R/4`` yin-yang levels of four lines (two codes of ``D/4`` dims each); ``R`` a multiple of 4."""
        if bits % 4 or dim % 4:
            return None
        return {"lines": 4, "levels": [[2, 4]] * (bits // 4)}

    def _set_weights(self, beta: float, codebook: float, hierarchy: float, relation: float) -> None:
        self.beta = check_range("beta", beta, 0.0, math.inf)
        self.codebook_weight = check_range("codebook_weight", codebook, 0.0, math.inf)
        self.hierarchy_weight = check_range("hierarchy_weight", hierarchy, 0.0, math.inf)
        self.relation_weight = check_range("relation_weight", relation, 0.0, math.inf)

    def _set_structure(
        self,
        terms: Sequence[RelationTerm],
        levels: Sequence[int] | str,
        similarity: Similarity,
        temperature: float,
        rows: int,
        count: int,
    ) -> None:
        if isinstance(terms, str) or not all(t in RELATION_TERMS for t in terms):
            raise ValueError(f"relation_terms: expected a list from {list(RELATION_TERMS)}, got {terms!r}")
        self.relation_terms = tuple(dict.fromkeys(terms))
        if levels == "all":
            levels = tuple(range(count))
        ok = not isinstance(levels, str) and isinstance(levels, (list, tuple))
        ok = ok and all(is_int(v) and 0 <= int(v) < count for v in levels)
        if not ok:
            raise ValueError(
                f"relation_levels: expected 'all' or level numbers in [0, {count}), got {levels!r}"
            )
        self.relation_levels = tuple(dict.fromkeys(cast(Sequence[int], levels)))
        self.similarity: Similarity = check_choice("similarity", similarity, SIMILARITIES)  # type: ignore[assignment]
        self.temperature = check_range("temperature", temperature, 0.0, math.inf, low_open=True)
        self.structure_rows = check_positive_int("structure_rows", rows)

    # ------------------------------------------------------------------ structure
    @property
    def level_list(self) -> list[IVQLevel]:
        return cast(list[IVQLevel], self.stage_list)

    @property
    def signature(self) -> dict[str, Any]:
        """What fixes the meaning of a code: lines and the ``(codes, blocks)`` of every level."""
        return {"lines": self.lines, "levels": [list(pair) for pair in self.level_layout]}

    @property
    def stored_codes(self) -> int:
        """Codes stored over all codebooks (8 for yin-yang, 78 for bottom-up, 104 for its per-block form)."""
        return sum(len(level.codebooks) * level.num_codes for level in self.level_list)

    @property
    def codebook_label(self) -> str:
        """The stored codebooks as the paper writes them: ``"4×2"`` (yin-yang), ``"2+4+8+64"`` (bottom-up),
        ``"2×6+4×3+8×2+64×1"`` (per-block); the hexagram alphabet is ``alphabet_sizes``."""
        sizes = [(lvl.num_codes, len(lvl.codebooks)) for lvl in self.level_list]
        if self.codebooks == "per_block":
            return "+".join(f"{k}×{p}" for k, p in sizes)
        if len({k for k, _ in sizes}) == 1:
            return f"{len(sizes)}×{sizes[0][0]}"
        return "+".join(str(k) for k, _ in sizes)

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = {
            "commitment": self.beta,
            "codebook": self.codebook_weight,
            "hierarchy": self.hierarchy_weight,
        }
        weights.update({term: self.relation_weight for term in self.relation_terms})
        return weights

    def relation_groups(self) -> list[tuple[int, ...]]:
        """Orbits of {identity, zong, cuo, cuo-zong} on the hexagrams (20 for L = 6, 6 for L = 4)."""
        return hexagram.relation_groups(self.lines)

    def hexagram_tables(self, hexagrams: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every level's hexagram table ``[2**L, D]`` (rows ``hexagrams`` if given), differentiable."""
        return [level.hexagram_table(hexagrams) for level in self.level_list]

    def structure_losses(self) -> dict[str, torch.Tensor]:
        """The unweighted structure terms whose weight is positive (see the module docstring): every table in
        one lookup and every pair in one batched contrastive pass (``vqkit.quantizers.ivq_structure``)."""
        relations = self.relation_terms if self.relation_weight > 0 else ()
        if self.hierarchy_weight == 0 and not relations:
            return {}
        levels, layout = self.level_list, layout_of(self.level_list)
        device = levels[0].codebook_list[0].weight.device
        terms = Terms(
            self.hierarchy_weight > 0, tuple(relations), tuple(self.relation_levels), self.zong_flip
        )
        if 2**self.lines <= self.structure_rows:
            plan = full_plan(layout, self.lines, terms, device)
        else:
            plan = make_plan(layout, self.lines, self._structure_hexagrams(device), terms)
        bank = unit_bank(levels, layout, reversed_units="zong" in relations and self.zong_flip == "features")
        return structure_losses(plan, bank, layout.dim, self._contrastive)

    def _contrastive(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive(a, b, similarity=self.similarity, temperature=self.temperature)

    def _structure_hexagrams(self, device: torch.device) -> torch.Tensor:
        total = 2**self.lines
        if total <= self.structure_rows:
            return torch.arange(total, device=device)
        return torch.randperm(total, device=device)[: self.structure_rows].sort().values

    # ------------------------------------------------------------------ search and contract
    @torch.no_grad()
    def search(self, h: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        """The first ``num_levels`` (default all) levels' hexagram indices ``[N, 1]``: the joint residual block
        search (module docstring); a level's codes never depend on the later levels."""
        levels = [
            (level.books(), level.blocks) for level in self.level_list[: num_levels or len(self.level_list)]
        ]
        found = residual_block_search(h, levels, self.codebook_options.distance)
        return [hexagram.blocks_to_index(codes, self.lines)[:, None] for codes in found]

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        if levels is None and self.gradient != "stages":
            out = self._joint_forward(z)
        else:  # quantizer dropout, or the stages' own estimators: the composite's per-level forward
            out = super()._quantize_levels(z, levels)
        out.losses.update(self.structure_losses())
        return out

    def _joint_forward(self, z: torch.Tensor) -> QuantizerOutput:
        """The composite's training forward (``ResidualQuantizer._quantize_levels`` with the joint search) in one
        pass down the levels: the same codes, codebook updates, metrics and ``quantized``, the same losses and
        gradients to float rounding, without a per-level autograd graph (``block_search.vq_loss_pair``)."""
        h = self.project_in(z)
        if self.training and self.needs_warm_start:
            self._walk(h.detach(), lambda stage, x: stage.warm_start(x))
        levels = self.level_list
        books = [level.books() for level in levels]
        found = residual_block_search(
            h,
            [(b, level.blocks) for b, level in zip(books, levels, strict=True)],
            self.codebook_options.distance,
        )
        stats = level_statistics(levels, h, found, grad=torch.is_grad_enabled())
        quantized, losses = level_outputs(
            h,
            stats.total,
            stats.residual_sum,
            stats.losses,
            books,
            stats.code_sums,
            rotation=self.gradient == "rotation",
            codebook_term=levels[0].codebook_list[0].update_rule.codebook_loss,
        )
        return QuantizerOutput(
            quantized=self.project_out(quantized),
            codes=torch.cat(stats.codes, dim=1),
            losses=losses,
            metrics={"codebook_utilization": stats.used.mean()},
            position_metrics={"stage/codebook_utilization": stats.used},
        )

    def cross_decode(self, codes: torch.Tensor, source: IVQ) -> torch.Tensor:
        """Decode with this IVQ's codebooks ``codes`` produced by ``source`` (cross-modal decoding: the index
        space is shared, the codebooks are not). Both must have the same ``signature``."""
        if not isinstance(source, IVQ):
            raise TypeError(f"source: expected an IVQ, got {type(source).__name__}")
        if source.signature != self.signature:
            raise ValueError(
                f"source: codes from an IVQ with layout {source.signature} cannot be decoded by an IVQ with "
                f"layout {self.signature}; cross-modal decoding needs the same lines and levels"
            )
        return self.decode(codes)
