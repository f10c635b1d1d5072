"""Tokens collapse and embeddings collapse, measured (Zhao et al., arXiv 2411.16550).

* **Tokens collapse**: codes concentrate on a few data modes. ``tokens_collapse`` assigns each used code to the
  mode that uses it most and compares each mode's share of the used codes with its share of the data; the
  total-variation distance between the two is 0 when codes follow the data and approaches 1 when one mode takes
  every code. The paper shows this qualitatively (Fig. 3); the score is our quantification.
* **Embeddings collapse**: the encoder merges data modes. ``modes_kept`` counts the modes that stay separable in
  embedding space: a mode is kept when most of its embeddings are nearer its own centroid than any other mode's.
* **Coverage**: ``code_coverage`` measures how well codes and embeddings cover each other: the share of codes
  lying inside the embedding distribution and the share of embeddings near a code (the paper's observation that
  collapsed tokens "lie outside the embeddings distribution").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vqkit.functional.search import nearest_code
from vqkit.functional.stats import code_counts


def _check(name: str, tensor: torch.Tensor, dims: int) -> None:
    if tensor.dim() != dims:
        raise ValueError(f"{name}: expected a {dims}-D tensor, got shape {tuple(tensor.shape)}")


@dataclass
class TokensCollapse:
    """Attributes:
    code_share: ``[M]`` share of the used codes assigned to each mode.
    data_share: ``[M]`` share of the data in each mode.
    distance: total-variation distance between the two (0: codes follow the data).
    starved_modes: modes whose code share is under half their data share.
    """

    code_share: torch.Tensor
    data_share: torch.Tensor
    distance: float
    starved_modes: int


@torch.no_grad()
def tokens_collapse(codes: torch.Tensor, labels: torch.Tensor, num_codes: int) -> TokensCollapse:
    """Share of codes per data mode against share of data per mode.

    Args:
        codes: ``[N]`` code of each vector.
        labels: ``[N]`` data mode (class, cluster) of each vector, in ``[0, M)``.
        num_codes: K.
    """
    _check("codes", codes, 1)
    _check("labels", labels, 1)
    if codes.shape != labels.shape:
        raise ValueError(
            f"codes, labels: expected equal shapes, got {tuple(codes.shape)} and {tuple(labels.shape)}"
        )
    num_modes = int(labels.max()) + 1
    joint = code_counts(codes * num_modes + labels, num_codes * num_modes).view(num_codes, num_modes)
    used = joint.sum(1) > 0
    owner = joint[used].argmax(1)
    code_share = code_counts(owner, num_modes) / max(int(used.sum()), 1)
    data_share = code_counts(labels, num_modes) / labels.numel()
    distance = 0.5 * float((code_share - data_share).abs().sum())
    starved = int((code_share < 0.5 * data_share).sum())
    return TokensCollapse(code_share.float(), data_share.float(), distance, starved)


def _own_centroid(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mode: how many embeddings it has, and how many are nearest its own centroid."""
    _check("embeddings", embeddings, 2)
    _check("labels", labels, 1)
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"embeddings, labels: expected one label per embedding, got {embeddings.shape[0]} embeddings and "
            f"{labels.shape[0]} labels"
        )
    num_modes = int(labels.max()) + 1
    counts = code_counts(labels, num_modes, embeddings.dtype)
    sums = torch.zeros(num_modes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    nearest = nearest_code(embeddings, sums / counts.clamp(min=1)[:, None]).codes
    return counts, code_counts(labels[nearest == labels], num_modes, embeddings.dtype)


@torch.no_grad()
def modes_kept(embeddings: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> int:
    """Number of data modes still separable in embedding space (nearest-centroid test).

    Args:
        embeddings: ``[N, d]`` encoder outputs.
        labels: ``[N]`` data mode of each embedding.
        threshold: share of a mode's embeddings that must be nearest its own centroid.
    """
    counts, own = _own_centroid(embeddings, labels)
    return int((own / counts.clamp(min=1) > threshold).sum())


@torch.no_grad()
def collapse_scores(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    codes: torch.Tensor | None = None,
    num_codes: int | None = None,
) -> dict[str, float]:
    """The study's two collapses as scalars, for evaluation reports of labelled data.

    Args:
        embeddings: ``[N, d]`` encoder outputs, one row per item (a latent grid flattened).
        labels: ``[N]`` class or cluster of each item.
        codes: ``[N]`` the code of each item when an item is one code (then ``num_codes`` is K).

    Returns ``num_modes``, ``modes_kept`` (``modes_kept``), ``mode_separability`` (share of items nearest their
    own mode's centroid: the continuous form of ``modes_kept``; it falls as the encoder merges modes, i.e.
    embeddings collapse) and, with ``codes``, ``tokens_distance`` and ``starved_modes`` (``tokens_collapse``).
    """
    counts, own = _own_centroid(embeddings, labels)
    scores = {
        "num_modes": float((counts > 0).sum()),
        "modes_kept": float((own / counts.clamp(min=1) > 0.5).sum()),
        "mode_separability": float(own.sum() / counts.sum()),
    }
    if codes is not None:
        if num_codes is None:
            raise ValueError("num_codes: expected K with codes, got None")
        tokens = tokens_collapse(codes, labels, num_codes)
        scores.update(tokens_distance=tokens.distance, starved_modes=float(tokens.starved_modes))
    return scores


@dataclass
class Coverage:
    """Attributes: ``codes_inside``: share of codes within ``radius`` of some embedding; ``embeddings_covered``:
    share of embeddings within ``radius`` of some code; ``radius``: the distance used."""

    codes_inside: float
    embeddings_covered: float
    radius: float


@torch.no_grad()
def code_coverage(embeddings: torch.Tensor, codebook: torch.Tensor, quantile: float = 0.95) -> Coverage:
    """Mutual coverage of codes and embeddings.

    The radius is the ``quantile`` of the embeddings' distances to their nearest code, so ``embeddings_covered``
    is about ``quantile`` by construction on well-spread codes; ``codes_inside`` is the informative number: codes
    farther than that from every embedding are outside the data (collapsed or dead).
    """
    _check("embeddings", embeddings, 2)
    _check("codebook", codebook, 2)
    to_code = nearest_code(embeddings, codebook).distances.clamp(min=0).sqrt()
    radius = float(torch.quantile(to_code.double(), quantile))
    to_embedding = nearest_code(codebook, embeddings).distances.clamp(min=0).sqrt()
    return Coverage(
        codes_inside=float((to_embedding <= radius).double().mean()),
        embeddings_covered=float((to_code <= radius).double().mean()),
        radius=radius,
    )
