"""``CodePrior``: the code frequencies an entropy coder codes a tokenizer's codes under.

One categorical distribution per code position ``j`` (the ``C`` codes of a vector: RVQ levels, PVQ groups),
estimated from codes ``[N, C]`` (a training set's) by additive smoothing::

    p_j(k) = (n_j(k) + floor) / (N + floor * K_j)

so a code never seen while fitting still costs a finite ``log2((N + floor * K_j) / floor)`` bits instead of
being uncodable. The default ``floor = 0.5`` is the Krichevsky-Trofimov estimator. Positions are modelled
independently (no context across positions, space or time): coding the codes a prior was fitted on costs about
the sum over positions of each position's entropy (``CodebookUsage``'s ``effective_bits``); other codes cost
their cross-entropy under it. A position of one code (``K_j = 1``) carries no information and is not coded.

Saved as one safetensors file (``CodePrior.save`` / ``CodePrior.load``; no pickle): the int64 tensor
``counts`` ``[C, max K_j]`` (zero beyond each position's alphabet) and string metadata ``format``
(``"vqkit.code_prior"``), ``version``, ``alphabet_sizes`` and ``floor`` (JSON), ``identity`` (what the prior
belongs to: ``tokenizer_identity`` of a tokenizer, or ``""``) and ``note`` (free text: what it was fitted on).
``digest`` hashes what fixes the probabilities (alphabets, floor, counts), so a coded file can name the prior
it needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit._validate import check_int_list
from vqkit.utils.atomic import atomic_write_bytes

PRIOR_FORMAT = "vqkit.code_prior"
PRIOR_VERSION = 1
DEFAULT_FLOOR = 0.5
# The range coder's probabilities have 24 bits: every code gets at least 2**-24. Above 2**20 codes a position's
# floor alone would hold a noticeable share of the mass, so larger alphabets are refused.
MAX_ALPHABET = 1 << 20


def code_rows(codes: Any, alphabet_sizes: Sequence[int], name: str = "codes") -> np.ndarray:
    """``codes`` ``[..., C]`` (tensor or array of integers) as an int64 array ``[N, C]``, each column ``j``
    checked to lie in ``[0, alphabet_sizes[j])``. ``-1`` (a level quantizer dropout did not code) is refused:
    it has no code to send."""
    array = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    c = len(alphabet_sizes)
    if array.dtype.kind not in "iu" or array.ndim < 1 or array.shape[-1] != c:
        raise ValueError(
            f"{name}: expected integer codes of shape [..., {c}], got {array.dtype} {array.shape}"
        )
    rows = array.reshape(-1, c).astype(np.int64, copy=False)
    if rows.size:
        low, high = rows.min(0), rows.max(0)
        for j, size in enumerate(alphabet_sizes):
            if low[j] < 0 or high[j] >= size:
                raise ValueError(
                    f"{name}: code {j} must lie in [0, {size}), got values in [{low[j]}, {high[j]}]"
                    + (
                        " (-1: a level that was not coded; such codes cannot be entropy-coded)"
                        if low[j] == -1
                        else ""
                    )
                )
    return rows


def count_codes(codes: Any, alphabet_sizes: Sequence[int]) -> np.ndarray:
    """How often each code occurs at each position: int64 ``[C, max K_j]`` of codes ``[..., C]``."""
    sizes = _alphabets(alphabet_sizes)
    rows = code_rows(codes, sizes)
    counts = np.zeros((len(sizes), max(sizes)), dtype=np.int64)
    for j in range(len(sizes)):
        counts[j] = np.bincount(rows[:, j], minlength=max(sizes))
    return counts


def _alphabets(alphabet_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(check_int_list("alphabet_sizes", list(alphabet_sizes), scalar=False))
    if max(sizes) > MAX_ALPHABET:
        raise ValueError(
            f"alphabet_sizes: expected at most {MAX_ALPHABET} codes per position, got {list(sizes)}"
        )
    return sizes


@dataclass(frozen=True, eq=False)
class CodePrior:
    """Per-position code frequencies and the floor that smooths them (see the module docstring).

    Attributes:
        counts: int64 ``[C, max K_j]``: code ``k`` seen ``counts[j, k]`` times at position ``j`` (zero beyond
            ``K_j``).
        alphabet_sizes: ``K_j`` per position, the quantizer's ``alphabet_sizes``.
        floor: the pseudo-count added to every code (> 0).
        identity: what the prior belongs to (``tokenizer_identity``); recorded in every file coded under it.
        note: free text kept with it (what it was fitted on).
    """

    counts: np.ndarray
    alphabet_sizes: tuple[int, ...]
    floor: float = DEFAULT_FLOOR
    identity: str = ""
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        sizes = _alphabets(self.alphabet_sizes)
        object.__setattr__(self, "alphabet_sizes", sizes)
        if not (isinstance(self.floor, (int, float)) and math.isfinite(self.floor) and self.floor > 0):
            raise ValueError(f"floor: expected a finite pseudo-count > 0, got {self.floor!r}")
        counts = np.asarray(self.counts)
        if counts.dtype.kind not in "iu" or counts.shape != (len(sizes), max(sizes)) or (counts < 0).any():
            raise ValueError(
                f"counts: expected non-negative integers of shape {(len(sizes), max(sizes))}, "
                f"got {counts.dtype} {counts.shape}"
            )
        if any(counts[j, k:].any() for j, k in enumerate(sizes)):
            raise ValueError("counts: expected zeros beyond each position's alphabet size")
        counts = counts.astype(np.int64)
        counts.setflags(write=False)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "floor", float(self.floor))

    @classmethod
    def fit(
        cls,
        codes: Any,
        alphabet_sizes: Sequence[int],
        *,
        floor: float = DEFAULT_FLOOR,
        identity: str = "",
        note: str = "",
    ) -> CodePrior:
        """The prior of codes ``[..., C]`` (e.g. a training set's ``tokenizer.encode`` output)."""
        return cls(count_codes(codes, alphabet_sizes), tuple(alphabet_sizes), floor, identity, note)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CodePrior):
            return NotImplemented
        return (self.digest, self.identity) == (other.digest, other.identity)

    @property
    def codes_per_vector(self) -> int:
        return len(self.alphabet_sizes)

    def probabilities(self, j: int) -> np.ndarray:
        """Position ``j``'s distribution, float64 ``[K_j]`` summing to one."""
        smoothed = self.counts[j, : self.alphabet_sizes[j]] + self.floor
        return np.asarray(smoothed / smoothed.sum(), dtype=np.float64)

    def prefix(self, width: int) -> CodePrior:
        """The prior of the first ``width`` positions (the codes of a residual quantizer's first levels)."""
        if not 1 <= width <= self.codes_per_vector:
            raise ValueError(f"width: expected 1 to {self.codes_per_vector} code positions, got {width}")
        if width == self.codes_per_vector:
            return self
        sizes = self.alphabet_sizes[:width]
        return CodePrior(self.counts[:width, : max(sizes)], sizes, self.floor, self.identity, self.note)

    def cross_entropy_bits(self, codes: Any) -> float:
        """``sum(-log2 p_j(code))`` over codes ``[..., C]``: the ideal coded size under this prior, in bits."""
        rows = code_rows(codes, self.alphabet_sizes)
        total = 0.0
        for j in range(self.codes_per_vector):
            total += float(-np.log2(self.probabilities(j))[rows[:, j]].sum())
        return total

    @property
    def digest(self) -> str:
        """SHA-256 (hex, first 32 digits) of what fixes the probabilities: alphabets, floor and counts."""
        digest = hashlib.sha256(json.dumps([list(self.alphabet_sizes), repr(self.floor)]).encode())
        digest.update(np.ascontiguousarray(self.counts, dtype="<i8").tobytes())
        return digest.hexdigest()[:32]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the prior to the safetensors file ``path``, atomically."""
        from safetensors.torch import save

        metadata = {
            "format": PRIOR_FORMAT,
            "version": str(PRIOR_VERSION),
            "alphabet_sizes": json.dumps(list(self.alphabet_sizes)),
            "floor": repr(self.floor),
            "identity": self.identity,
            "note": self.note,
        }
        tensors = {"counts": torch.from_numpy(np.array(self.counts))}
        return atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CodePrior:
        """Read a prior written by ``save``; every error names ``path`` and what is wrong."""
        from safetensors import SafetensorError, safe_open

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"prior: no code prior file at {str(file)!r}")
        try:
            with safe_open(str(file), framework="pt") as handle:
                metadata = handle.metadata() or {}
                counts = handle.get_tensor("counts").numpy() if "counts" in list(handle.keys()) else None
        except (OSError, SafetensorError) as err:
            raise ValueError(f"prior: cannot read the code prior {str(file)!r}: {err}") from err
        if metadata.get("format") != PRIOR_FORMAT or counts is None:
            raise ValueError(
                f"prior: {str(file)!r} is not a vqkit code prior (format {PRIOR_FORMAT!r} expected)"
            )
        if not metadata.get("version", "").isdigit() or int(metadata["version"]) > PRIOR_VERSION:
            raise ValueError(
                f"prior: {str(file)!r} has version {metadata.get('version')!r}; this vqkit reads up to {PRIOR_VERSION}"
            )
        try:
            sizes = tuple(json.loads(metadata["alphabet_sizes"]))
            return cls(
                counts, sizes, float(metadata["floor"]), metadata["identity"], metadata.get("note", "")
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"prior: the code prior {str(file)!r} is invalid: {err}") from err
