"""The collapse study's Fig. 2 (Zhao et al., arXiv 2411.16550, section 3.1): the outputs of an untrained encoder
are squeezed together, with fewer peaks than the data's 10 modes; a trained encoder's outputs show all 10.

    python examples/collapse_fig2.py [--epochs 20] [--seeds 0,1,2] [--figure docs/figures/collapse_fig2.png]

The paper's synthetic setting (section 5.2): 10 Gaussian clusters of 1,000 points in 2-D, standardized
(``vqkit.data.gaussian_clusters``), an MLP encoder / decoder of three linear layers with ReLU and hidden size
32 (``mlp_vqvae``), token size 1 for 2-D data, read here as a 1-D latent so that each embedding is one number,
as in the paper's 1-D histograms (an assumption: the paper gives no latent size). "Trained" is the paper's
pretraining stage: the autoencoder alone, no quantizer, AdamW at lr 1e-3 and batch 256, for ``--epochs``
epochs (the paper trains 100). Per seed (data and model), on all 10,000 points:

* ``width``: the 1st-99th percentile range of the embeddings (the paper: -0.10 to 0.20 untrained);
* ``eta2``: between-cluster share of the embeddings' variance (1: each cluster one point, 0: no separation),
  scale-free, so it compares untrained and trained encoders whatever their output scale;
* ``modes_kept``, ``mode_separability``: ``vqkit.metrics.collapse_scores`` of the embeddings; ``modes_kept``
  (clusters with most of their points nearest their own centroid) stands in for the paper's count of "obvious
  peaks" (5 against 10), which it makes by eye: a local-maximum count of the histogram was tried and dropped,
  as it counted bin noise (11 "peaks" untrained, 7 trained on seed 0).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vqkit.data import gaussian_clusters
from vqkit.metrics import collapse_scores
from vqkit.models import build_model

KEYS = ("width", "eta2", "modes_kept", "mode_separability")


def model(seed: int) -> Any:
    torch.manual_seed(seed)
    spec = {"name": "vq", "kwargs": {"codebook_size": 128}}  # unused: Fig. 2 looks at the encoder alone
    return build_model(
        {"name": "mlp_vqvae", "in_dim": 2, "hidden": [32, 32], "latent_dim": 1, "quantizer": spec}
    )


def pretrain(net: Any, x: torch.Tensor, epochs: int, seed: int) -> None:
    """The autoencoder without its quantizer (the paper's first stage), ``epochs`` passes of batch 256."""
    params = [*net.encoder.parameters(), *net.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=generator).split(256):
            loss = F.mse_loss(net.decoder(net.encoder(x[idx])), x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def describe(z: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The measures of the module docstring for embeddings ``z`` ``[N, 1]`` of clusters ``labels`` ``[N]``."""
    values = z[:, 0]
    p01, p99 = torch.quantile(values, torch.tensor([0.01, 0.99]))
    sums = torch.zeros(int(labels.max()) + 1).index_add_(0, labels, values)
    means = sums / torch.bincount(labels).clamp(min=1)
    within = (values - means[labels]).pow(2).mean()
    scores = collapse_scores(z, labels)
    return {
        "width": float(p99 - p01),
        "eta2": float(1 - within / values.var(unbiased=False)),
        "modes_kept": scores["modes_kept"],
        "mode_separability": scores["mode_separability"],
    }


def one_seed(seed: int, epochs: int) -> dict[str, Any]:
    x, labels = gaussian_clusters(dim=2, seed=seed)
    net = model(seed)
    with torch.no_grad():
        untrained = net.encoder(x)
    pretrain(net, x, epochs, seed)
    with torch.no_grad():
        trained = net.encoder(x)
    return {
        "untrained": describe(untrained, labels),
        "trained": describe(trained, labels),
        "z": {"untrained": untrained[:, 0], "trained": trained[:, 0]},
        "labels": labels,
    }


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def report(runs: list[dict[str, Any]]) -> str:
    lines = ["| encoder | " + " | ".join(KEYS) + " |", "|" + "---|" * (len(KEYS) + 1)]
    for state in ("untrained", "trained"):
        cells = [mean_std([run[state][key] for run in runs]) for key in KEYS]
        lines.append(f"| {state} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(run: dict[str, Any], path: Path) -> None:
    """Seed 0: the histogram of the embeddings, untrained and trained, stacked by cluster (Fig. 2a, 2b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, state, title in zip(
        axes, ("untrained", "trained"), ("(a) untrained", "(b) trained"), strict=True
    ):
        z, labels = run["z"][state], run["labels"]
        per_cluster = [z[labels == c].numpy() for c in range(int(labels.max()) + 1)]
        ax.hist(per_cluster, bins=100, stacked=True)
        ax.set_title(f"{title} encoder: {int(run[state]['modes_kept'])} of 10 modes kept", fontsize=10)
        ax.set_xlabel("encoder output (1-D latent)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--figure", type=Path, default=None, help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise ValueError(f"--epochs: expected a positive number of epochs, got {args.epochs}")
    runs = [one_seed(int(s), args.epochs) for s in args.seeds.split(",")]
    print(report(runs))
    if args.figure is not None:
        draw(runs[0], args.figure)
        print(f"figure: {args.figure}")
    return runs


if __name__ == "__main__":
    main()
