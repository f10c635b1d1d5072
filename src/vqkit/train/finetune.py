"""Fine-tune a quantized tokenizer from a continuous backbone: ``vqkit train`` with ``train.init_from``.

``python -m vqkit.train.finetune CONFIG --backbone SOURCE --run-dir DIR [--resume] [--threads N]
[key=value ...]``

The same as ``vqkit train CONFIG train.init_from=SOURCE --run-dir DIR`` (``vqkit.train.init_from``: the
backbone's weights outside the quantizer, k-means from its encoder on the training split, then
``train.steps`` steps), kept as the command the shipped tokenizers record, with a thread count. ``SOURCE`` is
a shipped model's name (``vqkit.list_pretrained``), a ``save_pretrained`` / ``save_tokenizer`` folder, or a
run directory (its latest checkpoint). ``--resume`` continues ``DIR`` from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vqkit.train.config import load_config
from vqkit.train.loop import train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqkit.train.finetune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for vqkit train")
    parser.add_argument("--backbone", required=True, help="shipped model name, model folder or run directory")
    parser.add_argument("--run-dir", type=Path, required=True, help="where the fine-tuning run goes")
    parser.add_argument("--resume", action="store_true", help="continue --run-dir from its latest checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    # Overrides may come after options too (``--run-dir X train.steps=5``), which argparse alone rejects.
    args, extra = parser.parse_known_args(argv)
    if any(arg.startswith("-") or "=" not in arg for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.threads < 1:
        parser.error(f"--threads: expected a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)
    overrides = [*args.overrides, *extra, f"train.init_from={args.backbone}"]
    final = train(load_config(args.config, overrides), args.run_dir, resume=args.resume)
    print(f"trained: {args.run_dir} ({final})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
