"""Rate-distortion demo: every registered quantizer at equal bits per vector (``python -m vqkit.demo``).

Setup
-----
* **Data.** Two sources, each at ``D = 8`` and ``D = 4`` dimensions: (a) i.i.d. standard Gaussian, (b) a
  mixture of 10 Gaussian clusters (centres ~ N(0, 2² I), cluster noise N(0, 0.5² I), equal weights),
  standardized with the mixture's exact mean and variance, so both sources have zero mean and unit variance.
* **Rate.** ``R = 8`` bits per vector, i.e. 1 bit per dimension at ``D = 8`` and 2 at ``D = 4``. Each
  registered name is configured by ``rate_config`` to spend exactly ``R`` bits: one codebook of ``2^R`` codes;
  two residual levels or two product groups of ``R/2`` bits; FSQ levels ``[4] * (R/2)``; LFQ ``bits = R``;
  residual FSQ / LFQ as two stages of ``R/2`` bits; IVQ as ``R/4`` yin-yang
  levels of four lines (two codes of ``D/4`` dims each); LooC as two ``D/2``-dim sub-vectors from one shared
  codebook of ``2^(R/2)`` codes. A name without a rule falls back to
  ``codebook_size = 2^R`` when its constructor takes one; otherwise, or when construction fails, it is
  skipped with a printed note. The table reports the rate the quantizer actually has (``bits_per_vector``),
  never the target.
* **Model.** The same tiny model around every quantizer: a learned per-dimension affine map in, the quantizer,
  a learned per-dimension affine map out (so FSQ/LFQ grids and ±1 codes can adapt their scale). Quantizers
  with another width inside (FSQ with ``R/2`` channels, factorized codes) add their own learned projections.
* **Training.** Loss ``MSE(x_hat, x) + out.loss`` (the quantizer's own weighted terms: commitment, codebook,
  entropy), Adam at ``LR`` for ``STEPS`` steps of ``BATCH`` vectors. Every quantizer sees the same batches in
  the same order and starts from the same seed. Codebook quantizers (every name whose constructor takes
  ``init``) use ``init="kmeans"`` on the first batch, SoundStream / Encodec practice, so the table compares
  the quantizers rather than unlucky random starts (collapse from random init is the subject of the
  collapse study, not of this demo). Every other option keeps the registry's defaults.
* **Evaluation** on held-out vectors in eval mode, through the codec path ``decode(encode(x))``:

  - ``MSE/dim``: mean squared error per dimension in data space;
  - ``÷D(R)``: its ratio to Shannon's distortion-rate function of a Gaussian source of the data's variance,
    ``D(R) = σ² · 2^(-2R/D)`` per dimension (``σ² = 1``). For the Gaussian source it is the true bound
    (ratios ≥ 1). For the mixture it is only an *upper* bound on the true ``D(R)`` (the Gaussian is the
    hardest source of a given variance), so ratios below 1 are possible and expected;
  - ``util`` and ``perplexity`` (``2^H`` of the code histogram) over the whole eval set (``CodebookUsage``;
    means over code positions for multi-code quantizers) and ``eff.bits``, the sum of the code positions'
    entropies: what an entropy coder would approach (an upper bound on the joint entropy for several codes);
  - ``enc vec/s``: throughput of ``quantizer.encode`` on the eval set (best of a few runs, 2 threads). It is
    the only figure that is not deterministic, and it is only meaningful on an otherwise idle machine.

Reading the table: scalar quantizers with fewer channels than ``D`` (FSQ and the residual forms at these
rates) project to fewer dimensions and lose the rest (projecting 8 dims to 4 costs at least 0.5 MSE/dim on
the Gaussian), and ``k`` sign bits cut ``D < k`` dimensions into fewer than ``2^k`` cells, so LFQ at ``D = 4``
cannot use all 256 codes. Everything is seeded and deterministic; results go to ``runs/demo/results.json``
(written atomically).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqkit._version import __version__
from vqkit.metrics.codes.usage import CodebookUsage
from vqkit.quantizers import (
    Quantizer,
)
from vqkit.rates import kwargs_at_rate, standalone_quantizers
from vqkit.registry import create_quantizer, quantizer_class
from vqkit.utils.atomic import atomic_write_text
from vqkit.utils.timing import best_seconds

SEED = 0
SETTINGS = ((8, 8), (4, 8))
"""``(D, R)`` pairs: vector dimension and bits per vector (1 and 2 bits per dimension)."""
STEPS = 500
BATCH = 1024
LR = 3e-3
EVAL_SIZE = 1 << 16
THROUGHPUT_REPEATS = 3
NUM_THREADS = 2
MIXTURE_CLUSTERS = 10
MIXTURE_CENTER_STD = 2.0
MIXTURE_NOISE_STD = 0.5
RESULTS_PATH = Path("runs/demo/results.json")

Sampler = Callable[[int, torch.Generator], torch.Tensor]


# ---------------------------------------------------------------------------------------------- data
def gaussian_sampler(dim: int) -> Sampler:
    """i.i.d. N(0, 1) vectors of ``dim``."""

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, dim, generator=generator)

    return sample


def mixture_sampler(dim: int, clusters: int, seed: int) -> Sampler:
    """Equal-weight Gaussian mixture, standardized with its exact mean and variance (per dimension)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=g) * MIXTURE_CENTER_STD
    mean = centers.mean(0)
    std = (centers.var(0, unbiased=False) + MIXTURE_NOISE_STD**2).sqrt()

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.randint(clusters, (n,), generator=generator)
        x = centers[which] + MIXTURE_NOISE_STD * torch.randn(n, dim, generator=generator)
        return (x - mean) / std

    return sample


def datasets(dim: int) -> dict[str, Sampler]:
    return {"gaussian": gaussian_sampler(dim), "mixture10": mixture_sampler(dim, MIXTURE_CLUSTERS, SEED + 1)}


# ---------------------------------------------------------------------------------------------- rates
def build_quantizer(name: str, dim: int, bits: int) -> Quantizer | str:
    """The quantizer at ``bits`` (k-means init where supported), or a note saying why it was skipped."""
    if quantizer_class(name).shared_codes:
        return f"skipped {name!r}: its codes are shared by the cells of a grid, and these sources are i.i.d. vectors"
    kwargs = kwargs_at_rate(name, dim, bits)
    if isinstance(kwargs, str):
        return kwargs
    return create_quantizer(name, dim=dim, **kwargs)


# ---------------------------------------------------------------------------------------------- model
class AffineCodec(nn.Module):
    """``x -> quantizer(x * a_in + b_in) * a_out + b_out`` with learned per-dimension ``a``, ``b``."""

    def __init__(self, quantizer: Quantizer) -> None:
        super().__init__()
        dim = quantizer.dim
        self.quantizer = quantizer
        self.scale_in = nn.Parameter(torch.ones(dim))
        self.shift_in = nn.Parameter(torch.zeros(dim))
        self.scale_out = nn.Parameter(torch.ones(dim))
        self.shift_out = nn.Parameter(torch.zeros(dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_in + self.shift_in

    def unembed(self, q: torch.Tensor) -> torch.Tensor:
        return q * self.scale_out + self.shift_out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and training loss (``MSE + out.loss``)."""
        out = self.quantizer(self.embed(x))
        x_hat = self.unembed(out.quantized)
        return x_hat, torch.nn.functional.mse_loss(x_hat, x) + out.loss


def train_codec(model: AffineCodec, stream: torch.Tensor) -> float:
    """Adam over the batches of ``stream`` ``[STEPS, BATCH, D]``; returns the last step's loss."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss = torch.zeros(())
    for batch in stream:
        _, loss = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class Row:
    """One table row (also one entry of ``results.json``)."""

    data: str
    quantizer: str
    dim: int
    target_bits: int
    codebook: str
    bits: float
    effective_bits: float
    mse_per_dim: float
    bound_per_dim: float
    ratio_to_bound: float
    utilization: float
    perplexity: float
    encode_vectors_per_s: float
    codebook_parameters: int
    final_train_loss: float
    roundtrip_exact: bool
    config: dict[str, Any]


def encode_throughput(quantizer: Quantizer, h: torch.Tensor) -> float:
    """Vectors per second of ``quantizer.encode`` on ``h`` (best of ``THROUGHPUT_REPEATS``)."""
    return h.shape[0] / best_seconds(lambda: quantizer.encode(h), THROUGHPUT_REPEATS, warmup=0)


def gaussian_bound(bits: float, dim: int, variance: float = 1.0) -> float:
    """Shannon's D(R) per dimension for a Gaussian source: ``σ² · 2^(-2R/D)``."""
    return variance * 2.0 ** (-2.0 * bits / dim)


@torch.no_grad()
def evaluate_codec(model: AffineCodec, x: torch.Tensor) -> dict[str, Any]:
    """Codec-path distortion, usage and throughput on held-out ``x``."""
    model.eval()
    q = model.quantizer
    h = model.embed(x)
    codes = q.encode(h)
    decoded = q.decode(codes)
    x_hat = model.unembed(decoded)
    forward = q(h)
    usage = CodebookUsage(q.alphabet_sizes)
    usage.update(codes)
    stats = usage.compute()
    return {
        "mse_per_dim": float((x_hat - x).pow(2).mean()),
        "utilization": stats["utilization"],
        "perplexity": stats["perplexity"],
        "effective_bits": stats["effective_bits"],
        "encode_vectors_per_s": encode_throughput(q, h),
        "roundtrip_exact": torch.equal(forward.codes, codes) and torch.equal(forward.quantized, decoded),
    }


def run_one(name: str, data: str, sampler: Sampler, dim: int, bits: int) -> Row | str:
    """Train and evaluate ``name`` at ``bits`` on ``dim``-dimensional ``data``; a string explains a skip."""
    torch.manual_seed(SEED)
    quantizer = build_quantizer(name, dim, bits)
    if isinstance(quantizer, str):
        return quantizer
    stream = sampler(STEPS * BATCH, torch.Generator().manual_seed(SEED + 10)).reshape(STEPS, BATCH, dim)
    held_out = sampler(EVAL_SIZE, torch.Generator().manual_seed(SEED + 20))
    model = AffineCodec(quantizer)
    final_loss = train_codec(model, stream)
    result = evaluate_codec(model, held_out)
    bound = gaussian_bound(quantizer.bits_per_vector, dim)
    return Row(
        data=data,
        quantizer=name,
        dim=dim,
        target_bits=bits,
        codebook=quantizer.codebook_label,
        bits=quantizer.bits_per_vector,
        bound_per_dim=bound,
        ratio_to_bound=result["mse_per_dim"] / bound,
        codebook_parameters=quantizer.num_codebook_parameters,
        final_train_loss=final_loss,
        config=quantizer.to_config()["kwargs"],
        **result,
    )


# ---------------------------------------------------------------------------------------------- report
COLUMNS = ("quantizer", "codebook", "bits", "eff.bits", "MSE/dim", "÷D(R)", "util", "perplexity", "enc vec/s")


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.quantizer,
        row.codebook,
        f"{row.bits:g}",
        f"{row.effective_bits:.2f}",
        f"{row.mse_per_dim:.4f}",
        f"{row.ratio_to_bound:.2f}",
        f"{row.utilization:.2f}",
        f"{row.perplexity:.1f}",
        f"{row.encode_vectors_per_s / 1e6:.2f}M",
    )


def format_table(rows: list[Row]) -> str:
    """Plain-text table, one block per (data, target rate)."""
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]

    def line(values: tuple[str, ...]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first, *(v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))])

    out: list[str] = []
    for key in dict.fromkeys((r.data, r.dim, r.target_bits) for r in rows):
        block = [r for r in rows if (r.data, r.dim, r.target_bits) == key]
        data, dim, bits = key
        bound = gaussian_bound(bits, dim)
        title = f"{data}: D={dim}, R={bits} bits ({bits / dim:g} bit/dim), Gaussian D(R) = {bound:.4f}/dim"
        out += ["", title, line(COLUMNS)]
        out += ["-" * len(out[-1])] + [line(_cells(r)) for r in block]
    return "\n".join(out)


def write_results(rows: list[Row], notes: list[str], seconds: float, path: Path = RESULTS_PATH) -> Path:
    payload = {
        "setup": {
            "seed": SEED,
            "settings": [{"dim": d, "bits": r} for d, r in SETTINGS],
            "steps": STEPS,
            "batch": BATCH,
            "lr": LR,
            "eval_size": EVAL_SIZE,
            "mixture": {
                "clusters": MIXTURE_CLUSTERS,
                "center_std": MIXTURE_CENTER_STD,
                "noise_std": MIXTURE_NOISE_STD,
                "standardized": True,
            },
            "model": "per-dimension affine in/out around the quantizer",
            "loss": "mse + out.loss",
            "init": "kmeans for quantizers that take `init`",
            "threads": torch.get_num_threads(),
        },
        "versions": {
            "vqkit": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "wall_seconds": seconds,
        "skipped": notes,
        "results": [asdict(r) for r in rows],
    }
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def main() -> None:
    torch.set_num_threads(NUM_THREADS)
    start = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    for dim, bits in SETTINGS:
        for data, sampler in datasets(dim).items():
            block: list[Row] = []
            for name in standalone_quantizers():
                result = run_one(name, data, sampler, dim, bits)
                if isinstance(result, str):
                    if result not in notes:
                        notes.append(result)
                        print(result, flush=True)
                    continue
                block.append(result)
                if not result.roundtrip_exact:
                    print(f"warning: {name} on {data}: forward and decode(encode(x)) disagree in eval mode")
            print(format_table(block), flush=True)
            rows += block
    seconds = time.perf_counter() - start
    path = write_results(rows, notes, seconds)
    print(f"\n{len(rows)} runs in {seconds:.0f} s; results written to {path}")


if __name__ == "__main__":
    main()
