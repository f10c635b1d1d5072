"""``VQ``: the single-codebook vector quantizer and its classic variants.

* VQ-VAE (van den Oord et al., arXiv 1711.00937): learnable codebook, ``codebook`` + ``beta * commitment``.
* EMA-VQ (same paper, appendix; Razavi et al., VQ-VAE-2, arXiv 1906.00446): ``update="ema"``; the codebook
  follows EMA statistics and only ``commitment`` is returned.
* k-means init on the first batch (SoundStream, arXiv 2107.03312; Encodec): ``init="kmeans"``.
* Dead-code restart (Jukebox / Encodec): ``restart="dead"``. CVQ anchors (Zheng & Vedaldi 2023): ``restart="anchor"``
  (the registry's ``cvq`` preset uses cosine matching with it, as the authors' experiments do).
* Factorized, l2-normalized low-dimensional codes (VQGAN-FC of ViT-VQGAN, Yu et al., arXiv 2110.04627):
  ``codebook_dim < dim`` with ``l2_normalize=True``; in and out projections are learned linear maps and
  decoding applies the out projection (the effective codebook is ``out_proj(codes)``).
* Training options (``vqkit.quantizers.vq_training``): stochastic codes (``sampling``, RQ-VAE / Gumbel-softmax),
  the usage-entropy penalty (``entropy_weight``), affine codes (``affine``) and synchronized commitment
  (``sync_nu``), the last two from Huh et al., ICML 2023 (arXiv 2305.08842).

Shapes: input ``[..., D]``; codes ``[..., 1]`` in ``[0, K)``.

Loss convention (VQ-VAE): ``codebook = |sg[z] - e|^2`` and ``commitment = |z - sg[e]|^2``, both means over
elements; ``beta`` weights ``commitment`` (``loss_weights``). With ``distance="cosine"`` the lookup compares
directions but the returned code is the raw (unnormalized) vector, as in CVQ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.functional.estimators import GRADIENTS, Gradient, estimate
from vqkit.functional.regularizers import orthogonal_penalty, usage_entropy
from vqkit.functional.stats import code_counts
from vqkit.quantizers.base import SingleCodebookQuantizer
from vqkit.quantizers.code_affine import AFFINE_MODES, AffineMode, CodeAffine
from vqkit.quantizers.codebook import Codebook, CodebookOptions
from vqkit.quantizers.vq_training import (
    SAMPLINGS,
    Sampling,
    check_combination,
    relaxed_output,
    soft_assignment,
    synchronized,
)
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vqkit.quantizers.codebook import CodebookKwargs


@register_quantizer("vq")
class VQ(SingleCodebookQuantizer):
    """Vector quantizer with one codebook of ``codebook_size`` codes.

    Args:
        dim: D.
        codebook_size: K.
        codebook_dim: dimension of the codes; ``None`` = ``dim``. Smaller values add learned in/out projections.
        beta: weight of the commitment loss.
        orthogonal_weight: weight of ``orthogonal``, the orthogonal regularization (arXiv 2112.00384) of the codes the
            batch uses (``vqkit.functional.regularizers``); 0 (default): not computed.
        orthogonal_codes: the most codes the term is computed on (a random sample of the used ones beyond it).
        gradient: ``"ste"`` (straight-through) or ``"rotation"`` (the rotation trick, arXiv 2410.06424); the
            value of ``quantized`` is the same, only the gradient to the input differs.
        l2_normalize: normalize inputs and codes (VQGAN-FC); matching is then l2 on the unit sphere.
        sampling: ``"nearest"``; in training ``"softmax"`` draws each code from ``softmax(-d / T)`` with the
            straight-through estimator (RQ-VAE, Lee et al. CVPR 2022, arXiv 2203.01941), ``"gumbel"`` the same
            draw with the Gumbel-softmax relaxation as its gradient (Jang et al., arXiv 1611.01144; DALL-E's
            dVAE, arXiv 2102.12092). The value is always the drawn code; eval and ``encode`` take the nearest.
        sampling_temperature: T of the draw (``T -> 0``: the nearest code).
        entropy_weight: weight of ``entropy = mean_n H(p_n) - diversity * H(mean_n p_n)``, ``p_n = softmax(-d_n /
            entropy_temperature)`` (MAGVIT-v2, arXiv 2310.05737, over this codebook); 0 (default): not computed.
        entropy_temperature, diversity: tau and the weight of the codebook-entropy term inside ``entropy``.
        affine: ``"none"``; ``"learned"`` or ``"running"`` codes ``a * c + b`` with a per-dimension scale and
            shift shared by all codes (affine re-parameterization, Huh et al., ICML 2023, arXiv 2305.08842;
            ``vqkit.quantizers.code_affine``).
        affine_lr: ``"learned"``: the factor on the affine parameters (the authors' ``affine_lr``).
        affine_decay: ``"running"``: decay of the input statistics' moving averages.
        sync_nu: synchronized commitment (Huh et al. 2023, Eq. 21; ``vqtorch``'s ``sync_nu``): the codes also
            receive ``sync_nu`` times the output's gradient; 0 (default): off.
        layout, allow_nonfinite: see ``Quantizer``.
        **codebook_options: the codebook's strategies and constants (``CodebookOptions``): ``init``
            (``"uniform"``), ``update`` (``"grad"``; ``"ema"`` for moving averages), ``distance`` (``"l2"``),
            ``restart`` (``"none"``; ``"dead"``, ``"anchor"`` for CVQ), ``decay`` (0.99), ``eps`` (1e-5),
            ``restart_threshold`` (1.0), ``kmeans_iters`` (10), ``kmeans_seed`` (0).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        codebook_dim: int | None = None,
        beta: float = 0.25,
        orthogonal_weight: float = 0.0,
        orthogonal_codes: int = 1024,
        gradient: Gradient = "ste",
        l2_normalize: bool = False,
        sampling: Sampling = "nearest",
        sampling_temperature: float = 1.0,
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        diversity: float = 1.0,
        affine: AffineMode = "none",
        affine_lr: float = 10.0,
        affine_decay: float = 0.9,
        sync_nu: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **codebook_options: Unpack[CodebookKwargs],
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.codebook_dim = None if codebook_dim is None else check_positive_int("codebook_dim", codebook_dim)
        code_dim = dim if codebook_dim is None else codebook_dim
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.orthogonal_weight = check_range("orthogonal_weight", orthogonal_weight, 0.0, float("inf"))
        self.orthogonal_codes = check_positive_int("orthogonal_codes", orthogonal_codes)
        self.l2_normalize = bool(l2_normalize)
        self.gradient: Gradient = check_choice("gradient", gradient, GRADIENTS)  # type: ignore[assignment]
        self.codebook_options = CodebookOptions.resolve(codebook_options)
        self.project_in: nn.Module = nn.Identity() if code_dim == dim else nn.Linear(dim, code_dim)
        self.project_out: nn.Module = nn.Identity() if code_dim == dim else nn.Linear(code_dim, dim)
        self.codebook = Codebook(codebook_size, code_dim, self.codebook_options, normalize=self.l2_normalize)
        self._set_training_options(
            sampling, sampling_temperature, (entropy_weight, entropy_temperature, diversity)
        )
        self.affine: AffineMode = check_choice("affine", affine, AFFINE_MODES)  # type: ignore[assignment]
        self.affine_lr = check_range("affine_lr", affine_lr, 0.0, float("inf"), low_open=True)
        self.affine_decay = check_range("affine_decay", affine_decay, 0.0, 1.0, high_open=True)
        self.sync_nu = check_range("sync_nu", sync_nu, 0.0, 1.0)
        options = self.codebook_options
        check_combination(self.sampling, self.gradient, self.sync_nu, self.affine, options, self.l2_normalize)
        self.code_affine = (
            None if affine == "none" else CodeAffine(code_dim, self.affine, affine_lr, affine_decay)
        )

    def _set_training_options(
        self, sampling: str, temperature: float, entropy: tuple[float, float, float]
    ) -> None:
        """Check and store the sampling and entropy options (``entropy``: weight, temperature, diversity)."""
        self.sampling: Sampling = check_choice("sampling", sampling, SAMPLINGS)  # type: ignore[assignment]
        self.sampling_temperature = check_range(
            "sampling_temperature", temperature, 0.0, float("inf"), low_open=True
        )
        self.entropy_weight = check_range("entropy_weight", entropy[0], 0.0, float("inf"))
        self.entropy_temperature = check_range(
            "entropy_temperature", entropy[1], 0.0, float("inf"), low_open=True
        )
        self.diversity = check_range("diversity", entropy[2], 0.0, float("inf"))

    @property
    def own_gradient_paths(self) -> tuple[str, ...]:
        paths = super().own_gradient_paths
        if self.sampling == "gumbel":
            paths += ("sampling='gumbel'",)
        if self.sync_nu > 0:
            paths += ("sync_nu > 0",)
        return paths

    @property
    def num_codebook_parameters(self) -> int:
        modules = (self.project_in, self.project_out, self.code_affine or nn.Identity())
        return self.codebook.weight.numel() + sum(p.numel() for m in modules for p in m.parameters())

    def search_cost(self) -> tuple[int, int] | None:
        return self.codebook_size * self.codebook.dim, self.codebook_size

    @property
    def effective_codebook(self) -> torch.Tensor:
        """``[K, D]``: what each code decodes to (after the out projection)."""
        return self.project_out(self.codebook.table(self.code_affine))

    def _to_code_space(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project_in(z)
        return F.normalize(h, dim=-1) if self.l2_normalize else h

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        return self.quantize_codes(z, None)

    def quantize_codes(self, z: torch.Tensor, codes: torch.Tensor | None) -> QuantizerOutput:
        """The training forward of ``z`` ``[N, D]`` with given ``codes`` ``[N, 1]`` (from a composite's joint
        or beam search) or, for ``None``, its own codes: the nearest, or in training drawn by ``sampling``."""
        h = self._to_code_space(z)
        given = None if codes is None else codes[:, 0]
        space = self.code_affine
        if self.training and space is not None:
            space.observe(h)
        if self.training and self.needs_warm_start:  # k-means first: the draw below sees the initial codes
            self.codebook.warm_start(self._stored(h))
        drawn = soft_assignment(
            h,
            self.codebook,
            space,
            sampling=self.sampling if self.training and given is None else "nearest",
            temperature=self.sampling_temperature,
            entropy=self.training and self.entropy_weight > 0,
        )
        found, q, losses = self.codebook.quantize(
            h, given if drawn.codes is None else drawn.codes, space=space
        )
        if drawn.relaxed is None:
            out = estimate(q, h, self.gradient)
        else:
            out = relaxed_output(q, drawn.relaxed, self.codebook.table(space))
        if self.sync_nu > 0:
            out = synchronized(out, q, self.sync_nu)
        if drawn.distances is not None:
            losses["entropy"] = usage_entropy(drawn.distances, self.entropy_temperature, self.diversity)
        if self.orthogonal_weight > 0:
            losses["orthogonal"] = self._orthogonal(found)
        return QuantizerOutput(quantized=self.project_out(out), codes=found[:, None], losses=losses)

    def _stored(self, h: torch.Tensor) -> torch.Tensor:
        """Code-space vectors in the stored codes' space (where k-means works): ``h`` unless the codes are affine."""
        return h if self.code_affine is None else self.code_affine.to_stored(h, self.codebook.vectors)

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = {"commitment": self.beta, "codebook": 1.0}
        if self.entropy_weight > 0:
            weights["entropy"] = self.entropy_weight
        if self.orthogonal_weight > 0:
            weights["orthogonal"] = self.orthogonal_weight
        return weights

    def _orthogonal(self, found: torch.Tensor) -> torch.Tensor:
        """The penalty on the codes of ``found`` (at most ``orthogonal_codes`` of them, drawn at random among the
        used ones; no host sync: unused fill-ins get weight 0)."""
        used = code_counts(found, self.codebook_size, torch.float32) > 0
        if self.codebook_size <= self.orthogonal_codes:
            return orthogonal_penalty(self.codebook.vectors, used)
        keys = torch.rand(self.codebook_size, device=found.device) + used.float()  # used codes first
        pick = keys.topk(self.orthogonal_codes).indices
        return orthogonal_penalty(self.codebook.vectors[pick], used[pick])

    @property
    def needs_warm_start(self) -> bool:
        return self.codebook.options.init == "kmeans" and not self.codebook.is_initialized()

    def warm_start(self, z: torch.Tensor) -> None:
        self.codebook.warm_start(self._stored(self._to_code_space(z.detach())))

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """k-means (this codebook's ``kmeans_iters``, ``kmeans_seed``, distance) on ``vectors`` ``[N, D]`` mapped
        to code space; marks the codebook initialized. Gathers over ranks like the first-batch init."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected [N, {self.dim}], got {tuple(vectors.shape)}")
        self.codebook.initialize_from(
            self._stored(self._to_code_space(vectors.to(self.compute_dtype))), force=True
        )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self.codebook.search(self._to_code_space(z), self.code_affine)[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.codebook.lookup(codes[:, 0], self.code_affine))
