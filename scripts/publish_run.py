"""Publish a trained run as a shipped tokenizer: ``python scripts/publish_run.py RUN NAME --data D --description T
--command C`` reads the run's model (latest checkpoint) and its ``eval.json`` (``vqkit eval RUN`` first) and
writes ``src/vqkit/pretrained/NAME`` with ``vqkit.pretrained.publish``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqkit.pretrained import publish
from vqkit.train.run import load_run_model

KEEP = (
    "stoi",
    "pesq",
    "lsd",
    "mel_distance",
    "psnr",
    "ssim",
    "mse",
    "kbps",
    "bits_per_item",
    "coded_bits_per_item",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--data", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", required=True)
    args = parser.parse_args()
    model, meta = load_run_model(args.run)
    report = json.loads((args.run / "eval.json").read_text(encoding="utf-8"))
    flat = report.get("metrics", report)
    metrics = {k: float(flat[k]) for k in KEEP if isinstance(flat.get(k), (int, float))}
    entry = publish(
        model,
        args.name,
        kind="tokenizer",
        data=args.data,
        metrics=metrics,
        command=args.command,
        description=args.description,
        sample_rate=meta.get("sample_rate"),
        item_shape=meta.get("item_shape"),
    )
    print(json.dumps(entry.as_dict(), indent=2))


if __name__ == "__main__":
    main()
