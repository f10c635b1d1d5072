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
* ``zong`` = ``g(f(H)[zong], H)`` with ``f`` the reversal of the feature axis (the authors' code flips it);
  ``cuo`` = ``-g(H, H[cuo])``; ``cuozong`` = ``g(H, H[cuozong])``; each the mean over ``relation_levels`` (the
  authors use the first level only).

"w.o. hierarchy" is ``hierarchy_weight=0``, "w.o. structure" is ``relation_weight=0``, both is "w.o. hier&stru";
a term whose weight is 0 is not computed. With more than ``structure_rows`` hexagrams (``L > 10`` by default)
each call draws that many distinct hexagrams at random and the terms are computed on them: at ``L = 12`` the full
terms are nine 4,096 x 4,096 contrastive matrices, and a training step costs about 24x the sampled one on CPU.

Deviations, each deliberate (see ``docs/ivq.md``):

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
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.functional import hexagram
from vqkit.functional.contrastive import SIMILARITIES, Similarity, symmetric_contrastive
from vqkit.functional.stats import code_counts
from vqkit.quantizers.base import Quantizer, straight_through
from vqkit.quantizers.codebook import Codebook, CodebookOptions, Init, Restart, Update, vq_losses
from vqkit.quantizers.composite import ResidualQuantizer, _mean_losses, _prefixed_metrics
from vqkit.registry import register_quantizer
from vqkit.types import Distance, Layout, QuantizerOutput

Codebooks = Literal["shared", "per_block"]
RelationTerm = Literal["zong", "cuo", "cuozong"]
RELATION_TERMS: tuple[RelationTerm, ...] = ("zong", "cuo", "cuozong")
PRESETS = ("yin-yang", "bottom-up", "top-down")
MAX_LINES = 24

_CPU_ENCODE_CHUNK_BYTES = 1 << 21
"""On CPU, ``encode`` runs all levels on row chunks of about this size: the residual stays in cache across
levels, which matters because a two-code level is a handful of memory passes and almost no arithmetic."""


def resolve_levels(levels: str | Sequence[Sequence[int]], lines: int) -> tuple[tuple[int, int], ...]:
    """A preset name or a list of ``(codes per codebook, blocks)`` -> validated ``((codes, blocks), ...)``."""
    if isinstance(levels, str):
        check_choice("levels", levels, PRESETS)
        if levels == "yin-yang":
            return ((2, lines),) * 4
        sizes = [g for g in range(1, lines + 1) if lines % g == 0]  # lines per block, fine to coarse
        pairs = tuple((2**g, lines // g) for g in sizes)
        return pairs if levels == "bottom-up" else pairs[::-1]
    if not isinstance(levels, (list, tuple)) or not levels:
        raise ValueError(
            f"levels: expected one of {list(PRESETS)} or a list of (codes, blocks), got {levels!r}"
        )
    out = []
    for level in levels:
        ok = isinstance(level, (list, tuple)) and len(level) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in level)
        if not ok or lines % level[1] or level[0] != 2 ** (lines // level[1]):
            raise ValueError(
                f"levels: each level is (codes, blocks) with blocks dividing lines={lines} and "
                f"codes = 2 ** (lines / blocks), got {level!r}"
            )
        out.append((int(level[0]), int(level[1])))
    return tuple(out)


class IVQLevel(Quantizer):
    """One IVQ level: ``[N, D]`` -> one hexagram index ``[N, 1]`` in ``[0, 2**L)``.

    The residual is split into ``blocks`` chunks of ``D / blocks`` dims; each is matched against the level's
    codebook of ``2 ** (L / blocks)`` codes (shared by the blocks, or one per block).
    """

    def __init__(
        self,
        dim: int,
        lines: int,
        blocks: int,
        *,
        codebooks: Codebooks,
        beta: float,
        codebook_options: CodebookOptions,
    ) -> None:
        super().__init__(dim)
        self.lines, self.blocks = lines, blocks
        self.num_codes = 2 ** (lines // blocks)
        self.sub_dim = dim // blocks
        self.beta = beta
        count = blocks if codebooks == "per_block" else 1
        self.codebooks = nn.ModuleList(
            Codebook.from_options(self.num_codes, self.sub_dim, codebook_options) for _ in range(count)
        )
        # Per-block codebooks are looked up as one table of ``blocks * K`` rows: block j's codes are offset.
        offsets = torch.arange(count) * self.num_codes if count > 1 else torch.zeros(1, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)

    offsets: torch.Tensor

    @property
    def codebook_list(self) -> list[Codebook]:
        return cast(list[Codebook], list(self.codebooks))

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (2**self.lines,)

    @property
    def num_codebook_parameters(self) -> int:
        return sum(cb.weight.numel() for cb in self.codebook_list)

    # ------------------------------------------------------------------ search and lookup
    def _parts(self, r: torch.Tensor) -> list[torch.Tensor]:
        """The vectors each codebook sees: all blocks ``[N * blocks, d]`` (shared) or block ``j`` ``[N, d]``."""
        chunks = r.reshape(r.shape[0], self.blocks, self.sub_dim)
        if len(self.codebooks) == 1:
            return [chunks.reshape(-1, self.sub_dim)]
        return list(chunks.unbind(1))

    def _binary_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For two-code codebooks: ``w = c1 - c0`` ``[P, d]`` and threshold ``[P]``; code 1 iff ``x . w > t``."""
        codes = torch.stack([cb.vectors.detach() for cb in self.codebook_list])  # [P, 2, d]
        if self.codebook_list[0].distance == "cosine":
            codes = F.normalize(codes, dim=-1)
            return codes[:, 1] - codes[:, 0], codes.new_zeros(codes.shape[0])
        norms = codes.square().sum(-1)
        return codes[:, 1] - codes[:, 0], 0.5 * (norms[:, 1] - norms[:, 0])

    def block_codes(
        self, r: torch.Tensor, binary_test: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``[N, D]`` -> each block's nearest code ``[N, blocks]`` (``binary_test``: a precomputed
        ``_binary_test()`` for two-code codebooks, reused across row chunks)."""
        n = r.shape[0]
        if self.num_codes == 2:
            w, threshold = self._binary_test() if binary_test is None else binary_test
            chunks = r.reshape(n, self.blocks, self.sub_dim)
            scores = chunks @ w[0] if w.shape[0] == 1 else torch.einsum("nbd,bd->nb", chunks, w)
            return (scores > threshold).long()
        parts = self._parts(r)
        found = [cb.search(part) for cb, part in zip(self.codebook_list, parts, strict=True)]
        return found[0].reshape(n, self.blocks) if len(found) == 1 else torch.stack(found, dim=1)

    def lookup(self, block_codes: torch.Tensor) -> torch.Tensor:
        """``[N, blocks]`` -> ``[N, D]``, differentiable w.r.t. the codebooks (the same values in every path)."""
        table = torch.cat([cb.vectors for cb in self.codebook_list]) if len(self.codebooks) > 1 else None
        if table is None:
            return F.embedding(block_codes, self.codebook_list[0].vectors).reshape(-1, self.dim)
        return F.embedding(block_codes + self.offsets, table).reshape(-1, self.dim)

    def hexagram_table(self, hexagrams: torch.Tensor | None = None) -> torch.Tensor:
        """What each hexagram decodes to at this level: ``[2**L, D]`` (or ``[M, D]`` for ``hexagrams`` ``[M]``)."""
        if hexagrams is None:
            hexagrams = torch.arange(2**self.lines, device=self.offsets.device)
        return self.lookup(hexagram.block_codes(hexagrams, self.lines, self.blocks))

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def initialize_from(self, r: torch.Tensor) -> None:
        """k-means init of codebooks not yet initialized (``init="kmeans"``) from this level's residual."""
        for cb, part in zip(self.codebook_list, self._parts(r), strict=True):
            if cb.init_mode == "kmeans":
                cb.initialize_from(part)

    def quantize_codes(self, r: torch.Tensor, codes: torch.Tensor) -> QuantizerOutput:
        """The training forward for given block codes ``[N, blocks]`` (from ``block_codes`` or IVQ's joint
        search): losses, straight-through output, codebook statistics."""
        q = self.lookup(codes)
        losses = vq_losses(r, q, codebook_term=self.codebook_list[0].update_mode == "grad")
        used = code_counts(codes + self.offsets, len(self.codebooks) * self.num_codes, torch.float32) > 0
        if self.training:
            parts = self._parts(r)
            per_codebook = [codes.reshape(-1)] if len(self.codebooks) == 1 else list(codes.unbind(1))
            for cb, part, c in zip(self.codebook_list, parts, per_codebook, strict=True):
                cb.update(part, c)
        return QuantizerOutput(
            quantized=straight_through(q, r),
            codes=hexagram.blocks_to_index(codes, self.lines)[:, None],
            losses=losses,
            metrics={"codebook_utilization": used.float().mean()},
        )

    def _quantize(self, r: torch.Tensor) -> QuantizerOutput:
        if self.training:
            self.initialize_from(r)
        return self.quantize_codes(r, self.block_codes(r.detach()))

    def _encode(self, r: torch.Tensor) -> torch.Tensor:
        return hexagram.blocks_to_index(self.block_codes(r), self.lines)[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.lookup(hexagram.block_codes(codes[:, 0], self.lines, self.blocks))

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        for cb, part in zip(self.codebook_list, self._parts(vectors), strict=True):
            cb.initialize_from(part, force=True)


@register_quantizer("ivq")
class IVQ(ResidualQuantizer):
    """IChing VQ: ``[..., D]`` -> codes ``[..., levels]``, one hexagram index in ``[0, 2**L)`` per level.

    Args:
        dim: D; every level's ``blocks`` must divide it.
        levels: ``"yin-yang"`` (default), ``"bottom-up"``, ``"top-down"``, or a list of ``(codes, blocks)``.
        lines: L, lines per hexagram (6: the 64 hexagrams; 4 and 12 are the paper's other variants).
        codebooks: ``"shared"`` (IVQ: one codebook per level) or ``"per_block"`` (hybrid RVQ + PVQ).
        distance: ``"l2"`` or ``"cosine"`` matching.
        init, update, restart, decay, eps, restart_threshold, kmeans_iters, kmeans_seed: every codebook's
            strategies (``vqkit.quantizers.codebook``); ``update="ema"`` needs the structure weights at 0.
        beta: weight of ``commitment``. codebook_weight: weight of ``codebook``.
        hierarchy_weight: weight of ``hierarchy``. relation_weight: weight of each of ``relation_terms``.
        relation_terms: which of ``"zong"``, ``"cuo"``, ``"cuozong"`` to compute.
        relation_levels: the levels (0-based) the relation terms apply to, or ``"all"``.
        similarity, temperature: the contrastive logits (``"cosine"`` or ``"dot"``, divided by ``temperature``).
        structure_rows: the most hexagrams a structure term is computed on per call (sampled beyond it).
        layout, allow_nonfinite: see ``Quantizer``.
    """

    def __init__(
        self,
        dim: int,
        levels: str | Sequence[Sequence[int]] = "yin-yang",
        *,
        lines: int = 6,
        codebooks: Codebooks = "shared",
        distance: Distance = "l2",
        init: Init = "kmeans",
        update: Update = "grad",
        restart: Restart = "none",
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_threshold: float = 1.0,
        kmeans_iters: int = 5,
        kmeans_seed: int = 0,
        beta: float = 0.25,
        codebook_weight: float = 1.0,
        hierarchy_weight: float = 0.1,
        relation_weight: float = 0.1,
        relation_terms: Sequence[RelationTerm] = RELATION_TERMS,
        relation_levels: Sequence[int] | Literal["all"] = (0,),
        similarity: Similarity = "cosine",
        temperature: float = 0.1,
        structure_rows: int = 1024,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        if isinstance(lines, bool) or not isinstance(lines, int) or not 2 <= lines <= MAX_LINES or lines % 2:
            raise ValueError(f"lines: expected an even integer in [2, {MAX_LINES}], got {lines!r}")
        check_positive_int("dim", dim)
        pairs = resolve_levels(levels, lines)
        for _, blocks in pairs:
            if dim % blocks:
                raise ValueError(
                    f"dim: expected a multiple of every level's blocks {[b for _, b in pairs]}, got dim={dim}"
                )
        self.lines = lines
        self.level_layout = pairs
        self.codebooks_mode = check_choice("codebooks", codebooks, ("shared", "per_block"))
        self.beta = check_range("beta", beta, 0.0, math.inf)
        self.codebook_weight = check_range("codebook_weight", codebook_weight, 0.0, math.inf)
        self.hierarchy_weight = check_range("hierarchy_weight", hierarchy_weight, 0.0, math.inf)
        self.relation_weight = check_range("relation_weight", relation_weight, 0.0, math.inf)
        if isinstance(relation_terms, str) or not all(t in RELATION_TERMS for t in relation_terms):
            raise ValueError(
                f"relation_terms: expected a list from {list(RELATION_TERMS)}, got {relation_terms!r}"
            )
        self.relation_terms = tuple(dict.fromkeys(relation_terms))
        self.relation_levels = self._check_relation_levels(relation_levels, len(pairs))
        self.similarity: Similarity = check_choice("similarity", similarity, SIMILARITIES)  # type: ignore[assignment]
        self.temperature = check_range("temperature", temperature, 0.0, math.inf, low_open=True)
        self.structure_rows = check_positive_int("structure_rows", structure_rows)
        if update == "ema" and (self.hierarchy_weight > 0 or self.relation_weight > 0):
            raise ValueError(
                "update: 'ema' codebooks are buffers and cannot learn from the structure losses; "
                "pass hierarchy_weight=0 and relation_weight=0 with update='ema', or update='grad'"
            )
        options = CodebookOptions.from_arguments(locals())  # this signature's Codebook arguments, by name
        stages = [
            IVQLevel(dim, lines, blocks, codebooks=codebooks, beta=self.beta, codebook_options=options)
            for _, blocks in pairs
        ]
        super().__init__(dim, stages, layout=layout, allow_nonfinite=allow_nonfinite)

    @staticmethod
    def _check_relation_levels(value: Sequence[int] | str, count: int) -> tuple[int, ...]:
        if value == "all":
            return tuple(range(count))
        ok = not isinstance(value, str) and isinstance(value, (list, tuple))
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < count for v in value)
        if not ok:
            raise ValueError(
                f"relation_levels: expected 'all' or level numbers in [0, {count}), got {value!r}"
            )
        return tuple(dict.fromkeys(cast(Sequence[int], value)))

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
    def codebook_size(self) -> str:
        """The stored codebooks as the paper writes them: ``"4×2"`` (yin-yang), ``"2+4+8+64"`` (bottom-up),
        ``"2×6+4×3+8×2+64×1"`` (per-block); the hexagram alphabet is ``alphabet_sizes``."""
        sizes = [(lvl.num_codes, len(lvl.codebooks)) for lvl in self.level_list]
        if self.codebooks_mode == "per_block":
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
        """The unweighted structure terms whose weight is positive (see the module docstring)."""
        losses: dict[str, torch.Tensor] = {}
        if self.hierarchy_weight == 0 and (self.relation_weight == 0 or not self.relation_terms):
            return losses
        device = self.level_list[0].offsets.device
        rows = self._structure_hexagrams(device)
        g = self._contrastive
        if self.hierarchy_weight > 0 and len(self.level_list) > 1:
            tables = self.hexagram_tables(rows)
            pairs = [(a, b) for a in range(len(tables)) for b in range(a + 1, len(tables))]
            losses["hierarchy"] = torch.stack([g(tables[a], tables[b]) for a, b in pairs]).sum()
        if self.relation_weight > 0 and self.relation_terms:
            relations = {
                "zong": hexagram.zong(rows, self.lines),
                "cuo": hexagram.cuo(rows, self.lines),
                "cuozong": hexagram.cuozong(rows, self.lines),
            }
            terms: dict[str, list[torch.Tensor]] = {t: [] for t in self.relation_terms}
            for index in self.relation_levels:
                level = self.level_list[index]
                table = level.hexagram_table(rows)
                for term in self.relation_terms:
                    related = level.hexagram_table(relations[term])
                    if term == "zong":
                        terms[term].append(g(related.flip(-1), table))
                    elif term == "cuo":
                        terms[term].append(-g(table, related))
                    else:
                        terms[term].append(g(table, related))
            losses.update({t: torch.stack(v).mean() for t, v in terms.items()})
        return losses

    def _contrastive(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive(a, b, similarity=self.similarity, temperature=self.temperature)

    def _structure_hexagrams(self, device: torch.device) -> torch.Tensor:
        total = 2**self.lines
        if total <= self.structure_rows:
            return torch.arange(total, device=device)
        return torch.randperm(total, device=device)[: self.structure_rows].sort().values

    # ------------------------------------------------------------------ search
    def _leading_binary_run(self) -> int:
        """How many leading levels are two-code levels with level 0's blocks (all of them for yin-yang)."""
        first = self.level_list[0]
        run = 0
        for level in self.level_list:
            if level.num_codes != 2 or level.blocks != first.blocks:
                break
            run += 1
        return run

    def _binary_run_tables(self, run: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the leading two-code run of ``R`` levels (``P`` codebooks per level, 1 when shared):

        * ``normals`` ``[P, d, R]``: level ``k``'s half-space normal ``w_k = c_{k,1} - c_{k,0}``;
        * ``thresholds`` ``[R, P]``: level ``k``'s threshold plus ``sum_{i<k} c_{i,0} . w_k`` (what the earlier
          levels subtract from its score when they pick code 0);
        * ``steps`` ``[R, R, P]``: ``steps[i, k] = (c_{i,1} - c_{i,0}) . w_k`` for ``i < k`` (else 0), the extra
          amount when level ``i`` picks code 1.
        """
        tests = [level._binary_test() for level in self.level_list[:run]]
        normals = torch.stack([w for w, _ in tests], dim=-1)  # [P, d, R]
        codes = torch.stack(
            [
                torch.stack([cb.vectors.detach() for cb in level.codebook_list])
                for level in self.level_list[:run]
            ]
        )  # [R(i), P, 2, d]
        later = torch.ones(run, run, dtype=codes.dtype, device=codes.device).triu(1)  # [i, k]: 1 where i < k
        base = torch.einsum("ipd,pdk->ikp", codes[:, :, 0], normals) * later[..., None]  # [i, k, P]
        thresholds = torch.stack([t for _, t in tests]) + base.sum(0)  # [R(k), P]
        steps = torch.einsum("ipd,pdk->ikp", codes[:, :, 1] - codes[:, :, 0], normals) * later[..., None]
        return normals, thresholds, steps

    def _place_values(self, device: torch.device) -> list[torch.Tensor]:
        """Per level, the float32 weights ``[blocks]`` that turn block codes into the hexagram index (exact:
        indices stay below ``2**24``)."""
        return [
            hexagram.blocks_to_index(
                torch.eye(level.blocks, dtype=torch.long, device=device), self.lines
            ).float()
            for level in self.level_list
        ]

    @torch.no_grad()
    def _search(self, z: torch.Tensor, out: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every level's block codes for ``z`` ``[N, D]``: the nearest code of each block of each level's
        residual, by one procedure shared by ``forward`` and ``encode`` (so their codes agree bit for bit).
        Returns ``[N, blocks]`` int64 per level, or, given ``out`` ``[N, levels]``, writes the hexagram indices
        there instead (``encode``: nothing per level is kept).

        The leading run of two-code levels with equal blocks (all of yin-yang) never forms its residuals: with
        ``r_k = x - sum_{i<k} q_i``, level ``k``'s test ``r_k . w_k > t_k`` is ``x . w_k - sum_{i<k} q_i . w_k
        > t_k``, and ``q_i . w_k`` is one of two precomputed numbers per block. So the run costs one
        ``[N * blocks, d] x [d, R]`` product and a few ``[N, blocks]`` operations: the residual search, with
        different rounding only at exact ties. Later levels search their residual explicitly. On CPU the rows
        go in chunks that stay in cache."""
        levels = self.level_list
        run = self._leading_binary_run()
        tables = self._binary_run_tables(run) if run else None
        tests = [level._binary_test() if level.num_codes == 2 else None for level in levels]
        places = self._place_values(z.device) if out is not None else []
        rows = z.shape[0] or 1
        if z.device.type == "cpu":
            rows = max(1, _CPU_ENCODE_CHUNK_BYTES // (z.element_size() * self.dim))
        pieces: list[list[torch.Tensor]] = [[] for _ in levels]
        for start in range(0, max(z.shape[0], 1), rows):
            chunk = z[start : start + rows]
            found = self._binary_run(chunk, tables) if tables is not None else []
            residual = chunk
            if len(found) < len(levels):
                for level, codes in zip(levels, found, strict=False):
                    residual = residual - level.lookup(codes.long())
            for level, test in zip(levels[len(found) :], tests[len(found) :], strict=True):
                codes = level.block_codes(residual, test)
                found.append(codes)
                if len(found) < len(levels):
                    residual = residual - level.lookup(codes)
            if out is not None:
                for j, (codes, place) in enumerate(zip(found, places, strict=True)):
                    out[start : start + rows, j] = (codes.to(place.dtype) @ place).long()
            else:
                for piece, codes in zip(pieces, found, strict=True):
                    piece.append(codes.long())
        return [] if out is not None else [torch.cat(piece) for piece in pieces]

    def _binary_run(
        self, x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> list[torch.Tensor]:
        """The leading two-code run on rows ``x`` ``[n, D]``: bits ``[n, blocks]`` (float 0/1) per level."""
        normals, thresholds, steps = tables
        first = self.level_list[0]
        chunks = x.reshape(x.shape[0], first.blocks, first.sub_dim)
        if normals.shape[0] == 1:  # shared codebooks: one matrix product for every block of every level
            scores = (chunks.reshape(-1, first.sub_dim) @ normals[0]).T.reshape(-1, x.shape[0], first.blocks)
        else:
            scores = torch.einsum("nbd,bdr->rnb", chunks, normals)
        bits: list[torch.Tensor] = []
        for k in range(scores.shape[0]):
            score = scores[k]
            for i, earlier in enumerate(bits):
                score = torch.addcmul(score, earlier, steps[i, k], value=-1.0)
            bits.append((score > thresholds[k]).to(score.dtype))
        return bits

    # ------------------------------------------------------------------ contract
    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        levels = self.level_list
        pending = [cb for level in levels for cb in level.codebook_list if cb.init_mode == "kmeans"]
        if self.training and not all(cb.is_initialized() for cb in pending):
            # k-means on the first training batch, level by level on the residuals (gathered over ranks).
            residual = z.detach()
            for level in levels:
                level.initialize_from(residual)
                residual = residual - level.lookup(level.block_codes(residual)).detach()
        found = self._search(z)
        residual, total, outputs = z, torch.zeros_like(z), []
        for level, codes in zip(levels, found, strict=True):
            out = level.quantize_codes(residual, codes)
            q = out.quantized.detach()  # its value is exactly the looked-up codes
            residual = residual - q
            total = total + q
            outputs.append(out)
        losses = _mean_losses(outputs)
        losses.update(self.structure_losses())
        return QuantizerOutput(
            quantized=straight_through(total, z),
            codes=torch.cat([out.codes for out in outputs], dim=1),
            losses=losses,
            metrics=_prefixed_metrics(outputs),
        )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        codes = torch.empty(z.shape[0], len(self.level_list), dtype=torch.long, device=z.device)
        self._search(z, out=codes)
        return codes

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
