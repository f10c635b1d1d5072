"""``bench_quantizers.py``'s report: the speed and vector-quantize-pytorch tables as text and as Markdown, and
the console summary with its warnings."""

from __future__ import annotations

from typing import Any

from bench_common import load_warning

# vector-quantize-pytorch classes whose codes must equal vqkit's exactly (the same deterministic rounding or
# signs, no codebook to drift): anything under 100% agreement there is a bug in a mapping, worth a warning.
EXACT_CLASSES = {"FSQ", "LFQ", "ResidualLFQ", "GroupedResidualLFQ"}


def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


SPEED_HEADER = [
    "quantizer",
    "codes",
    "K",
    "encode ms",
    "encode Mvec/s",
    "encode / matmul",
    "train ms",
    "train Mvec/s",
    "train / matmul step",
    "peak MiB",
    "peak / matmul",
]
VQP_HEADER = [
    "quantizer",
    "vector-quantize-pytorch",
    "encode speedup",
    "eval-forward speedup",
    "train speedup",
    "its peak MiB (÷ ours)",
    "codes agree (eval / step 1)",
    "note",
]


def table_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    speed, vqp = [], []
    for name, r in report["quantizers"].items():
        enc, train, mem = r["encode"], r["train"], r["memory"]
        t_enc = enc["timings"]["vqkit_encode"]["min_s"]
        t_train = train["timings"]["vqkit_step"]["min_s"]
        speed.append(
            [
                name,
                r["codebook_size"],
                str(r["k_matmul"]),
                f"{t_enc * 1e3:.2f}",
                f"{enc['vectors_per_s'] / 1e6:.2f}",
                f"{enc['ratio_to_matmul']:.2f}",
                f"{t_train * 1e3:.1f}",
                f"{train['vectors_per_s'] / 1e6:.3f}",
                f"{train['ratio_to_matmul_step']:.2f}",
                _mib(mem["vqkit_encode_bytes"]),
                _f(mem["ratio_to_matmul"], ".2f"),
            ]
        )
        v = r["vqp"]
        if "n/a" in v:
            vqp.append([name, "n/a", "", "", "", "", "", v["n/a"]])
            continue
        vqp.append(
            [
                name,
                v["class"],
                _f(v["encode_speedup"], ".1f", "×"),
                _f(v["eval_forward_speedup"], ".1f", "×"),
                _f(v["train_speedup"], ".1f", "×"),
                f"{_mib(mem['vqp_eval_forward_bytes'])} ({_f(mem['vqp_ratio'], '.1f', '×')})",
                f"{v['eval_agreement_pct']:.2f}% / {v['step1_agreement_pct']:.2f}%",
                "",
            ]
        )
    return speed, vqp


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def markdown_report(report: dict[str, Any]) -> str:
    env, config = report["environment"], report["config"]
    speed, vqp = table_rows(report)
    load = env["loadavg_before"][0], env["loadavg_after"][0]
    lines = [
        f"N={config['n']} vectors, D={config['dim']}, {config['bits']} bits per vector; CPU, "
        f"{env['threads']} threads ({env['cpu_model']}), torch {env['torch']}, vector-quantize-pytorch "
        f"{env['vector_quantize_pytorch']}, {env['timestamp_utc'][:10]}, commit {env['git_commit']}, "
        f"load average {load[0]:.2f} before / {load[1]:.2f} after; {env['wall_s']:.0f} s wall.",
        "",
        f"Command: `{env['command']}`",
        "",
        markdown_table(SPEED_HEADER, speed),
        "",
        "Against vector-quantize-pytorch (speedups: its time / vqkit's; above 1, vqkit is faster):",
        "",
        markdown_table(VQP_HEADER, vqp),
    ]
    if "same_rate" in report:
        lines += ["", same_rate_line(report["same_rate"])]
    if report["skipped"]:
        lines += ["", "Not run: " + "; ".join(report["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def same_rate_line(section: dict[str, Any]) -> str:
    """The same-rate race (``quantizer_timing.same_rate_race``) as one sentence."""
    best, median = section["ratio_to_residual_vq"], section["median_ratio_to_residual_vq"]
    parts = [f"{name} {best[name]:.2f} (median {median[name]:.2f})" for name in best if name != "residual_vq"]
    rounds = section["timings"]["residual_vq"]["repeats"]
    return (
        f"Training step ÷ residual VQ's at this rate, one round-robin race of {rounds} rounds (best round; "
        f"median in brackets): " + ", ".join(parts) + "."
    )


def print_report(report: dict[str, Any]) -> None:
    """The two tables, a warning for codes that should agree exactly and do not, the load warning and the
    skipped quantizers, on stdout."""
    speed, vqp = table_rows(report)
    print()
    print(text_table(SPEED_HEADER, speed))
    print()
    print(text_table(VQP_HEADER, vqp))
    for name, r in report["quantizers"].items():
        exact = r["vqp"].get("class") in EXACT_CLASSES
        agree = [r["vqp"].get(key) for key in ("eval_agreement_pct", "step1_agreement_pct")]
        if exact and any(a is not None and a < 100.0 for a in agree):
            print(f"WARNING: {name}: codes should agree exactly with vector-quantize-pytorch, got {agree}%")
    if "same_rate" in report:
        print(same_rate_line(report["same_rate"]))
    env = report["environment"]
    warning = load_warning(env["loadavg_before"], env["loadavg_after"])
    if warning:
        print(warning)
    if report["skipped"]:
        print("\n".join(report["skipped"]))
