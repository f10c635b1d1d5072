"""Items per second of ``vqkit tokenize`` on one process and on two, end to end, on this machine's CPUs.

The tokenizer is the Fashion-MNIST conv VQ-VAE of ``configs/fashion_mnist.yaml`` (hidden 128, 28x28 -> 7x7
latents, 512 codes; seeded random weights: the speed does not depend on training), saved with
``save_tokenizer``; the source is ``fashion_mnist:train`` (54,000 images; Debian's dataset-fashion-mnist). Each
setting tokenizes the whole source into a fresh folder through ``tokenize_dataset`` (the code behind the
command), timed from the call to the finished ``index.json``: process start, model loading, reading, encoding,
shard and index writing all count. The settings:

* ``1 process x 1 thread`` and ``1 process x 2 threads`` (in this process, ``torch.set_num_threads``);
* ``2 processes x 1 thread`` (``nproc=2``: spawned, gloo; each rank takes every other shard).

They run round-robin ``--repeats`` times and the best time of each is kept. ``overhead`` is the time of a
``resume`` of the finished folder (load the model, read the source, plan, barrier, rewrite the index; nothing to
encode), the fixed cost inside each time; ``steady_items_per_s`` leaves it out. Every setting's codes are
checked equal to the first one's, item by item. Writes JSON (atomically) with the items/s and the ratios to one
process at one thread.

    python benchmarks/bench_tokenize.py [--source fashion_mnist:train] [--repeats 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import environment, load_warning

import vqkit
from vqkit.train.shards import read_shards
from vqkit.train.tokenize_dataset import tokenize_dataset
from vqkit.utils.atomic import atomic_write_text

MODEL = {
    "name": "image_vqvae",
    "in_channels": 1,
    "hidden": 128,
    "res_hidden": 32,
    "latent_dim": 64,
    "downsample": 4,
    "quantizer": {"name": "vq", "kwargs": {"codebook_size": 512}},
}
SETTINGS = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
BASELINE = "1 process x 1 thread"


def _run(tokenizer: Path, source: str, out: Path, nproc: int, threads: int, **kwargs: Any) -> float:
    torch.set_num_threads(threads)  # this process; spawned ranks set cpu_count // nproc themselves
    started = time.perf_counter()
    tokenize_dataset(tokenizer, source, out, nproc=nproc, shard_size=1024, batch_size=64, **kwargs)
    return time.perf_counter() - started


def bench(source: str, repeats: int, work: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    tokenizer = vqkit.save_tokenizer(vqkit.build_model(MODEL).eval(), work / "tokenizer")
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    reference: dict[str, np.ndarray] | None = None
    for round_ in range(repeats):
        names = list(SETTINGS)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            nproc, threads = SETTINGS[name]
            out = work / f"out-{nproc}-{threads}"
            times[name].append(_run(tokenizer, source, out, nproc, threads, force=True))
            codes = read_shards(out)
            if reference is None:
                reference = codes
            assert list(codes) == list(reference), f"{name}: other items"
            assert all(np.array_equal(codes[k], reference[k]) for k in reference), f"{name}: other codes"
            print(f"{name:24s} {len(codes) / times[name][-1]:8.1f} items/s ({times[name][-1]:.2f} s)")
    assert reference is not None
    overhead = {
        f"{n} process(es)": _run(tokenizer, source, work / f"out-{n}-1", n, 1, resume=True) for n in (1, 2)
    }
    rows: dict[str, dict[str, Any]] = {
        name: {"seconds": min(t), "items_per_s": len(reference) / min(t), "all_seconds": t}
        for name, t in times.items()
    }
    base = rows[BASELINE]["items_per_s"]
    for name, row in rows.items():
        row[f"ratio_to_{BASELINE.replace(' ', '_')}"] = row["items_per_s"] / base
        fixed = overhead[f"{SETTINGS[name][0]} process(es)"]
        row["steady_items_per_s"] = len(reference) / max(row["seconds"] - fixed, 1e-9)
    return {"items": len(reference), "settings": rows, "overhead_s": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source", default="fashion_mnist:train", help="a vqkit tokenize SOURCE of 28x28 images"
    )
    parser.add_argument("--repeats", type=int, default=2, help="round-robin rounds (best time kept)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_tokenize.json"))
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench_tokenize-"))
    try:
        result = bench(args.source, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    two = result["settings"]["2 processes x 1 thread"]["items_per_s"]
    one = result["settings"][BASELINE]["items_per_s"]
    print(f"2 processes / 1 process: {two / one:.2f}x; fixed overhead {result['overhead_s']}")
    env = environment(load_before, load_after, started, command=sys.argv, source=args.source, model=MODEL)
    env["timing"] = "best wall time of each setting over round-robin repeats, call to finished index"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps({"environment": env, **result}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
