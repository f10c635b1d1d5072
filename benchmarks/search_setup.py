"""``bench_search.py``'s building blocks: its targets, its seeded data and float64 oracle, and the vqkit and
vector-quantize-pytorch VQs it compares, set up as that script's docstring says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from bench_common import SEED, vqp_module

import vqkit
from vqkit.functional.search import pairwise_distances

_VQP = vqp_module()
VectorQuantize: Any = None if _VQP is None else _VQP.VectorQuantize  # an untyped third-party class
DIM = 64


@dataclass
class Target:
    """A measured ratio against its limit; ``required=False`` rows are context and never fail the run."""

    name: str
    value: float
    limit: float
    higher_is_better: bool
    note: str = ""
    required: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def row(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = ("PASS" if self.passed else "FAIL") if self.required else "info"
        name = self.name if self.required else f"{self.name} [info]"
        return f"{name:<54} {self.value:>9.3f} {op} {self.limit:<6g} {verdict:<5} {self.note}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "higher_is_better": self.higher_is_better,
            "passed": self.passed,
            "note": self.note,
            "required": self.required,
        }


def print_targets(targets: list[Target]) -> list[str]:
    """Print the targets table and the pass count; the names of the required targets that failed."""
    print(f"{'target':<54} {'measured':>9}    {'limit':<6} {'':<5} note")
    for target in targets:
        print(target.row())
    required = [t for t in targets if t.required]
    failed = [t.name for t in required if not t.passed]
    print(
        f"\n{len(required) - len(failed)}/{len(required)} targets pass"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return failed


def make_data(n: int, k: int, dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, dim, generator=generator)
    codebook = torch.randn(k, dim, generator=generator)
    return x, codebook


def oracle_codes(x: torch.Tensor, codebook: torch.Tensor, rows: int = 2048) -> torch.Tensor:
    """Exact nearest codes in float64 (dense per block of rows; small problems only)."""
    c64 = codebook.double()
    blocks = [pairwise_distances(x[i : i + rows].double(), c64).argmin(1) for i in range(0, len(x), rows)]
    return torch.cat(blocks)


def reference_vq(codebook: torch.Tensor, **overrides: Any) -> Any:  # an untyped third-party module
    """vector-quantize-pytorch's VectorQuantize, set up as the module docstring says, holding ``codebook``."""
    assert VectorQuantize is not None
    kwargs: dict[str, Any] = dict(
        dim=codebook.shape[1],
        codebook_size=codebook.shape[0],
        decay=0.99,
        eps=1e-5,
        kmeans_init=False,
        commitment_weight=0.25,
        rotation_trick=False,
        threshold_ema_dead_code=0,
        use_cosine_sim=False,
        sync_codebook=False,
    )
    kwargs.update(overrides)
    ref = VectorQuantize(**kwargs)
    with torch.no_grad():
        ref._codebook.embed.copy_(codebook[None])
        ref._codebook.embed_avg.copy_(codebook[None])  # EMA sums = C * counts (counts start at 1, as vqkit's)
    return ref


def vqkit_vq(codebook: torch.Tensor, **kwargs: Any) -> vqkit.VQ:
    q = vqkit.VQ(codebook.shape[1], codebook.shape[0], **kwargs)
    q.codebook.set_codes(codebook)
    return q
