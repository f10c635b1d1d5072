"""SimVQ's 2-D toy (Zhu et al., arXiv 2411.02038, section 4.2, Figs. 2-3 and Remark 4.1) with vqkit's quantizers.

    python examples/simvq_toy.py [--steps 300] [--seeds 0,1,2] [--figure docs/figures/simvq_toy.png]

No encoder or decoder: the quantizer's input is the data itself, so the only gradient is the ``codebook`` term
``|sg[x] - q|^2``, the paper's toy objective. Three codebooks of K = 10 codes, from the same draw of
N(0, I) (Eq. 11) per seed:

* ``vq``: vanilla VQ, every code a trainable vector (Fig. 2a, ``|x - q|^2``);
* ``simvq``: SimVQ, the codes frozen, ``q W^T + b`` learned (Fig. 2b, ``|x - qW|^2`` with ``q`` frozen);
* ``simvq_trainable``: SimVQ with the codes trained too (Fig. 3, Remark 4.1).

``W`` starts at the identity and ``b`` at 0, so all three start from the same ten points (vanilla VQ is SimVQ
with ``W = I``, the paper's section 4.1); vqkit's own defaults (codes of std ``D ** -0.5``, ``nn.Linear``'s
random ``W``) are replaced for that. The paper does not state its optimizer or learning rate; plain SGD
(``--lr 0.5``) is used, so a code that no input selects gets exactly zero gradient and does not move.

Two data settings. ``points`` is the paper's: two targets drawn once from N((2, 2), I) and N((-2, -2), I)
(Eq. 10), each batch 64 copies of each with perturbation noise N(0, 0.01). ``clouds`` (ours, not in the paper)
draws every batch from the two Gaussians themselves, so that using more codes lowers the loss and utilization
means something. Per step range, it reports how many codes were updated (moved by more than 1e-6) and how
many were used (selected by some input); at the end, the codes used on a fresh batch of 4,096, the
quantization MSE, how far the codes that no training input ever selected moved (mean distance; 0 when every
code was used), ``|W - I|_F`` (how far ``W`` moved) and ``|W|_F``. ``--figure`` draws the code trajectories
of seed 0 and the loss and ``|W|_F`` curves (Fig. 3b).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

import vqkit
from vqkit.quantizers import VQ, SimVQ

VARIANTS = ("vq", "simvq", "simvq_trainable")
SETTINGS = ("points", "clouds")
NUM_CODES = 10
MOVE_TOL = 1e-6
CENTRES = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])


def build(variant: str, codes: torch.Tensor) -> Any:
    """The variant's quantizer, its codes set to ``codes`` ``[K, 2]`` (and ``W = I``, ``b = 0`` for SimVQ)."""
    if variant == "vq":
        vq = vqkit.create_quantizer("vq", dim=2, codebook_size=NUM_CODES, init="gaussian")
        assert isinstance(vq, VQ)
        with torch.no_grad():
            vq.codebook.weight.copy_(codes)
        return vq
    q = vqkit.create_quantizer(
        "simvq", dim=2, codebook_size=NUM_CODES, train_codebook=variant == "simvq_trainable"
    )
    assert isinstance(q, SimVQ)
    with torch.no_grad():
        q.codebook.copy_(codes)
        q.transform.weight.copy_(torch.eye(2))
        q.transform.bias.zero_()
    return q


def batch(setting: str, targets: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[2 n, 2]``: ``n`` noisy copies of each target (``points``) or ``n`` draws of each Gaussian (``clouds``)."""
    means = (targets if setting == "points" else CENTRES).repeat_interleave(n, dim=0)
    std = 0.1 if setting == "points" else 1.0  # N(0, 0.01) is a variance of 0.01
    return means + std * torch.randn(means.shape, generator=generator)


def w_norm(q: Any) -> float:
    return float(torch.linalg.norm(q.transform.weight.detach())) if hasattr(q, "transform") else float("nan")


def w_change(q: Any) -> float:
    """``|W - I|_F``: how far ``W`` moved from its start (0 for vanilla VQ, which has no ``W``)."""
    if not hasattr(q, "transform"):
        return 0.0
    return float(torch.linalg.norm(q.transform.weight.detach() - torch.eye(2)))


def step_ranges(steps: int) -> list[tuple[int, int]]:
    """``[(first, last)]`` 1-based, inclusive: the first twelfth, up to a third, the rest."""
    cuts = sorted({max(1, steps // 12), max(1, steps // 3), steps})
    return list(zip([1, *(c + 1 for c in cuts[:-1])], cuts, strict=True))


def train(variant: str, setting: str, seed: int, steps: int, lr: float) -> dict[str, Any]:
    """One run: per-range updated / used counts, final utilization, MSE, ``|W|_F``, trajectory and curves."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(NUM_CODES, 2, generator=generator)  # Eq. 11, the same for every variant
    targets = CENTRES + torch.randn(2, 2, generator=generator)  # Eq. 10: two points, drawn once
    q = build(variant, codes)
    opt = torch.optim.SGD([p for p in q.parameters() if p.requires_grad], lr=lr)
    trajectory = [q.effective_codebook.detach().clone()]
    ranges, loss_curve, norm_curve = [], [], []
    ever_used = torch.zeros(NUM_CODES, dtype=torch.bool)
    for first, last in step_ranges(steps):
        start, used = trajectory[-1], torch.zeros(NUM_CODES, dtype=torch.bool)
        for _ in range(first, last + 1):
            out = q(batch(setting, targets, 64, generator))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            used[out.codes[:, 0]] = True
            trajectory.append(q.effective_codebook.detach().clone())
            loss_curve.append(float(out.losses["codebook"].detach()))
            norm_curve.append(w_norm(q))
        moved = (trajectory[-1] - start).norm(dim=1) > MOVE_TOL
        ranges.append({"steps": (first, last), "updated": int(moved.sum()), "used": int(used.sum())})
        ever_used |= used
    idle = ~ever_used  # codes no training input ever selected: how far did they move anyway?
    idle_move = (trajectory[-1] - trajectory[0]).norm(dim=1)[idle].mean() if idle.any() else torch.tensor(0.0)
    q.eval()
    with torch.no_grad():
        test = batch(setting, targets, 2048, generator)
        out = q(test)
        mse = float((out.quantized - test).pow(2).sum(1).mean())
    return {
        "ranges": ranges,
        "used": int(out.codes.unique().numel()),
        "mse": mse,
        "w_norm": w_norm(q),
        "w_change": w_change(q),
        "idle_move": float(idle_move),
        "trajectory": torch.stack(trajectory),
        "targets": targets,
        "loss": loss_curve,
        "norm": norm_curve,
    }


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def report(results: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """A markdown table: mean ± sample std over seeds per variant and setting."""
    first = next(iter(results.values()))[0]
    spans = [f"{a}-{b}" for a, b in (r["steps"] for r in first["ranges"])]
    head = ["setting", "codebook", *(f"updated {s}" for s in spans), *(f"used {s}" for s in spans)]
    head += [f"used at the end (of {NUM_CODES})", "MSE", "move of never-used codes", "|W - I|_F", "|W|_F"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (setting, variant), runs in results.items():
        cells = [setting, variant]
        for key in ("updated", "used"):
            cells += [mean_std([r["ranges"][i][key] for r in runs]) for i in range(len(spans))]
        cells += [mean_std([r[key] for r in runs]) for key in ("used", "mse", "idle_move")]
        if variant == "vq":
            cells += ["–", "–"]
        else:
            cells += [mean_std([r[key] for r in runs]) for key in ("w_change", "w_norm")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(results: dict[tuple[str, str], list[dict[str, Any]]], path: Path) -> None:
    """Seed 0, the paper's ``points`` setting: one panel of code trajectories per variant, one of the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    titles = {"vq": "vanilla VQ (Fig. 2a)", "simvq": "SimVQ, codes frozen (Fig. 2b)"}
    titles["simvq_trainable"] = "SimVQ, codes trained (Fig. 3a)"
    for ax, variant in zip(axes[:3], VARIANTS, strict=True):
        run = results["points", variant][0]
        path_xy = run["trajectory"].numpy()
        for k in range(NUM_CODES):
            ax.plot(path_xy[:, k, 0], path_xy[:, k, 1], lw=0.8)
            ax.scatter(*path_xy[0, k], s=12, c="grey")
            ax.scatter(*path_xy[-1, k], s=18, c="black", marker="x")
        ax.scatter(*run["targets"].T.numpy(), s=80, c="red", marker="*", label="targets")
        ax.set_title(titles[variant], fontsize=10)
        ax.set_aspect("equal")
    ax = axes[3]
    for variant in ("simvq", "simvq_trainable"):
        run = results["points", variant][0]
        ax.plot(run["loss"], label=f"{variant} loss")
        ax.plot(run["norm"], "--", label=f"{variant} |W|_F")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title("loss and |W|_F (Fig. 3b; the two losses overlap)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(seeds: list[int], steps: int, lr: float) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (setting, variant): [train(variant, setting, seed, steps, lr) for seed in seeds]
        for setting in SETTINGS
        for variant in VARIANTS
    }


def main(argv: list[str] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--figure", type=Path, default=None, help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    if args.steps < 3:
        raise ValueError(f"--steps: expected at least 3 (three step ranges), got {args.steps}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.manual_seed(0)
    results = run(seeds, args.steps, args.lr)
    print(report(results))
    if args.figure is not None:
        draw(results, args.figure)
        print(f"figure: {args.figure}")
    return results


if __name__ == "__main__":
    main()
