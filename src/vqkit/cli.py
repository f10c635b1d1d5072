"""The ``vqkit`` command: train, evaluate and use tokenizers.

::

    vqkit train CONFIG [key=value ...] [--run-dir DIR] [--resume] [--nproc N] [--pretrain-epochs N]
    vqkit bench BENCH [--out DIR] [--quick] [--methods a,b,...] [--seeds 0,1,...]
    vqkit eval RUN [--split test|val] [--max-items N] [--fid-samples N] [--checkpoint DIR]
    vqkit encode RUN FILES... -o codes.npz [--entropy-code [--prior FILE]]
    vqkit decode RUN codes.npz -o DIR [--force] [--prior FILE]
    vqkit export RUN DIR [--force]
    vqkit info RUN
    vqkit tokenize TOKENIZER SOURCE --out DIR [--format npz|parquet] [--nproc N] [--resume | --force]

``RUN`` is a run directory written by ``vqkit train`` (or, for encode / decode / info, a tokenizer written by
``vqkit export``). Errors go to stderr with exit status 1 (2 for bad command lines); nothing is left
half-written.

No command deletes a file it did not write. ``decode`` and ``export`` write into a new or empty folder, or
replace their own previous output there (``decode`` knows its files by the ``vqkit-decode.json`` manifest it
writes beside them; ``export`` by the format markers in ``config.json`` and ``weights.safetensors``). A folder
holding anything else is refused unless ``--force``, which writes the command's files there and keeps every
other file; a file in the way that the command did not write is refused even then. ``encode -o`` replaces
only an earlier codes archive. ``decode`` names each file after its input (``shirt.png`` -> ``shirt.png``);
inputs that share a name (``a/x.png``, ``b/x.png``) get their position on the ``encode`` command line
appended: ``x-0.png``, ``x-1.png`` (``vqkit.utils.names``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqkit.utils.manifest import Manifest
from vqkit.utils.names import item_stem, unique_names

RUN_HELP = "run directory, exported tokenizer, or a shipped model's name (vqkit.list_pretrained)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqkit", description="Train, evaluate and use vector-quantized tokenizers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a tokenizer from a YAML config", description="Train a tokenizer.")
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=100")
    p.add_argument("--run-dir", type=Path, help="where the run goes (default runs/<config name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint"
    )
    p.add_argument(
        "--nproc", type=int, default=1, help="DDP processes on this machine (gloo on CPU, nccl on GPU)"
    )
    p.add_argument("--pretrain-epochs", type=int, help="epochs without the quantizer, then k-means init")
    p.add_argument("--init-from", metavar="BACKBONE", help="fine-tune a backbone: train.init_from")
    p.add_argument("--no-report", action="store_true", help="skip the final evaluation and report.md")

    p = sub.add_parser(
        "bench",
        help="compare quantizers at equal bits per item (report.md, results.json, plots)",
        description="Train and evaluate several quantizers at equal rate and budget; finished runs are skipped.",
    )
    p.add_argument("bench", type=Path, help="bench file (see configs/bench/)")
    p.add_argument("--out", type=Path, help="report folder (default runs/bench-<name>[-quick])")
    p.add_argument("--quick", action="store_true", help="the bench file's quick preset")
    p.add_argument(
        "--methods", help="comma-separated labels or quantizer names (default: the file's entries)"
    )
    p.add_argument("--seeds", type=_seed_list, help="comma-separated seeds replacing the file's (e.g. 0,1,2)")
    p.add_argument("--report-only", action="store_true", help="report the finished runs, train none")

    p = sub.add_parser(
        "eval", help="evaluate a run and write eval.json and report.md", description="Evaluate a run."
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument(
        "--split", choices=["val", "test"], help="split to evaluate (default: the config's eval.split)"
    )
    p.add_argument("--max-items", type=int, help="evaluate at most this many items")
    p.add_argument("--fid-samples", type=int, help="images for FID (0: no FID)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the latest)")

    p = sub.add_parser(
        "encode", help="encode image or audio files to codes", description="Encode files to codes."
    )
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("files", nargs="+", type=Path, help="images (PNG, JPEG, ...) or audio (WAV, FLAC, OGG)")
    p.add_argument("-o", "--output", type=Path, required=True, help="codes archive to write (.npz)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--num-quantizers", type=int, help="keep the first K residual levels (a model trained with dropout)"
    )
    rate.add_argument("--kbps", type=float, help="audio: the most residual levels within this bitrate")
    p.add_argument("--entropy-code", action="store_true", help="range-code under a code prior (coding extra)")
    p.add_argument("--prior", type=Path, help="code prior (default RUN/code_prior.safetensors; runs fit it)")

    p = sub.add_parser(
        "decode", help="decode a codes archive back to files", description="Decode codes to files."
    )
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("codes", type=Path, help="archive written by vqkit encode")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the decoded files")
    p.add_argument("--prior", type=Path, help="code prior of a coded file (default: RUN's)")
    p.add_argument(
        "--force", action="store_true", help="write into a folder holding other files (they are kept)"
    )

    p = sub.add_parser(
        "export", help="export the tokenizer (safetensors + JSON)", description="Export a tokenizer."
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("output", type=Path, help="folder to write; load it with vqkit.load_tokenizer")
    p.add_argument(
        "--force", action="store_true", help="write into a folder holding other files (they are kept)"
    )
    p.add_argument(
        "--onnx", action="store_true", help="write encode.onnx and decode.onnx instead (export extra)"
    )

    p = sub.add_parser("info", help="describe a run or exported tokenizer", description="Describe a run.")
    p.add_argument("run", type=Path, help=RUN_HELP)
    from vqkit.train.tokenize_dataset import add_tokenize_parser  # its options are declared beside it

    add_tokenize_parser(sub)
    return parser


# ---------------------------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from vqkit.train.config import load_config
    from vqkit.train.loop import train, train_worker
    from vqkit.train.run import spawn

    options = (("pretrain_epochs", args.pretrain_epochs), ("init_from", args.init_from))
    overrides = [*args.overrides, *(f"train.{key}={value}" for key, value in options if value is not None)]
    config = load_config(args.config, overrides)
    run_dir = args.run_dir or Path("runs") / args.config.stem
    if args.nproc < 1:
        raise ValueError(f"--nproc: expected a positive integer, got {args.nproc}")
    if args.nproc > 1:
        spawn(args.nproc, train_worker, config, run_dir, args.resume)
    else:
        train(config, run_dir, resume=args.resume)
    print(f"trained: {run_dir}")
    if not args.no_report:
        return _eval(
            argparse.Namespace(run=run_dir, split=None, max_items=None, fid_samples=None, checkpoint=None)
        )
    return 0


def _seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]``; anything else is a usage error naming the option."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return seeds


def _bench(args: argparse.Namespace) -> int:
    from vqkit.train.bench import run_bench

    out = args.out or Path("runs") / f"bench-{args.bench.stem}{'-quick' if args.quick else ''}"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    started = time.perf_counter()
    report = run_bench(
        args.bench, out, quick=args.quick, methods=methods, seeds=args.seeds, report_only=args.report_only
    )
    print(report.read_text())
    print(f"bench: {report} ({time.perf_counter() - started:.0f} s)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vqkit.train.evaluate import evaluate, metric_sections
    from vqkit.train.report import write_report
    from vqkit.train.run import is_run_dir, load_run_model, load_split, run_config
    from vqkit.utils.atomic import atomic_write_text

    if not is_run_dir(args.run):
        raise FileNotFoundError(f"run: {str(args.run)!r} is not a run directory (config.yaml + checkpoints/)")
    config = run_config(args.run)
    if args.max_items is not None:
        config.eval.max_items = args.max_items
    if args.fid_samples is not None:
        config.eval.fid_samples = args.fid_samples
    split = args.split or config.eval.split
    model, meta = load_run_model(args.run, str(args.checkpoint) if args.checkpoint else None)
    dataset = load_split(config, split)
    # A continuous run (train.continuous, a bench's ceiling) is evaluated with its quantizer skipped.
    metrics = evaluate(model, dataset, config, progress=True, unquantized=config.train.continuous)
    result = {"split": split, "checkpoint": meta.get("checkpoint"), "metrics": metrics}
    atomic_write_text(args.run / "eval.json", json.dumps(result, indent=2))
    report = write_report(args.run, metrics, model=model, dataset=dataset, items=config.eval.report_items)
    summary = metric_sections(metrics)["summary"]  # the loss terms and per-position values are in report.md
    width = max(len(k) for k in summary)
    for key in sorted(summary):
        print(f"{key:<{width}}  {summary[key]:.6g}")
    print(f"report: {report}")
    return 0


def _model_inputs(meta: dict[str, Any], model: Any) -> tuple[str, int, int | None]:
    modality = meta.get("modality") or getattr(model, "modality", None)
    shape = meta.get("item_shape") or []
    channels = int(shape[0]) if modality == "image" and shape else int(getattr(model, "in_channels", 1))
    rate = meta.get("sample_rate") or getattr(model, "sample_rate", None)
    return str(modality), channels, None if rate is None else int(rate)


def _encode(args: argparse.Namespace) -> int:
    from vqkit.rates import levels_for
    from vqkit.train.coded_files import check_codes_target, encode_prior, write_any_codes
    from vqkit.train.files import read_input
    from vqkit.train.run import load_run_model

    check_codes_target(args.output)
    model, meta = load_run_model(args.run)
    modality, channels, rate = _model_inputs(meta, model)
    inputs = [
        read_input(path, modality, channels=channels, sample_rate=rate) for path in args.files
    ]  # all first
    levels = levels_for(model, args.num_quantizers, args.kbps, names=("--num-quantizers", "--kbps"))
    prior = encode_prior(args.run, model, args.entropy_code, args.prior)
    codes, items = [], []
    with torch.no_grad():
        for path, x in zip(args.files, inputs, strict=True):
            c = model.encode(x[None], num_quantizers=levels)[0]
            bits = float(model.bits_per_item(tuple(x.shape), num_quantizers=levels))
            codes.append(c)
            items.append({"source": path.name, "shape": list(x.shape), "bits": bits})
            print(f"{path}: codes {tuple(c.shape)}, {bits:.0f} bits ({bits / 8:.0f} bytes)")
    meta_out = {"modality": modality, "sample_rate": rate, "channels": channels, "items": items}
    coded = write_any_codes(args.output, codes, meta_out, prior)
    total = sum(item["bits"] for item in items)
    print(f"wrote {args.output}: {len(items)} items, {total:.0f} bits in all{coded}")
    return 0


DECODED = Manifest("vqkit-decode.json", "vqkit.decode", writer="vqkit decode")


def _decode(args: argparse.Namespace) -> int:
    from vqkit.train.coded_files import read_any_codes
    from vqkit.train.run import load_run_model

    model, meta = load_run_model(args.run)
    codes, info = read_any_codes(args.codes, args.run, model, args.prior)
    modality, _, rate = _model_inputs(meta, model)
    if info.get("modality") != modality:
        raise ValueError(
            f"codes: {str(args.codes)!r} holds {info.get('modality')} codes; this model is {modality}"
        )
    stems = [item_stem(item.get("source"), i) for i, item in enumerate(info["items"])]
    names = unique_names(stems, ".png" if modality == "image" else ".wav")
    owner = DECODED.owner("-o/--output", "--force")
    DECODED.check(args.output, names, owner, overwrite=args.force)  # before the work, not after
    payloads = _decoded_payloads(model, codes, info, modality, int(info.get("sample_rate") or rate or 0))
    files = dict(zip(names, payloads, strict=True))
    sources = {name: item.get("source") for name, item in zip(names, info["items"], strict=True)}
    DECODED.publish(
        args.output, files, owner, overwrite=args.force, info={"codes": str(args.codes), "sources": sources}
    )
    print(f"wrote {len(files)} files to {args.output}")
    return 0


def _decoded_payloads(
    model: Any, codes: list[torch.Tensor], info: dict[str, Any], modality: str, rate: int
) -> list[bytes]:
    """Each item decoded and encoded as a file: PNG for images, WAV (cut to the input's length) for audio."""
    from vqkit.train.files import audio_bytes, image_bytes

    payloads = []
    with torch.no_grad():
        for c, item in zip(codes, info["items"], strict=True):
            x = model.decode(c[None])[0]
            if modality == "image":
                payloads.append(image_bytes(x))
            else:
                payloads.append(audio_bytes(x[..., : int(item["shape"][-1])], rate))
    return payloads


def _export(args: argparse.Namespace) -> int:
    from vqkit.models import save_tokenizer
    from vqkit.models.io import TOKENIZER_FOLDER
    from vqkit.train.run import is_run_dir, load_run_model
    from vqkit.utils.folders import FILES
    from vqkit.utils.publish import plan_write

    if not is_run_dir(args.run):
        raise FileNotFoundError(f"run: {str(args.run)!r} is not a run directory (config.yaml + checkpoints/)")
    model, meta = load_run_model(args.run)
    if args.onnx:
        from vqkit.export import export_onnx

        shape = meta.get("item_shape")
        if not shape:
            raise ValueError(
                f"run: {str(args.run)!r} does not record its item shape, which ONNX export needs"
            )
        example = torch.rand(2, *[int(s) for s in shape])  # two items: the batch axis stays dynamic
        export_onnx(model, args.output, example, overwrite=args.force, argument="output", force="--force")
        print(f"exported {meta.get('checkpoint')} to {args.output} (encode.onnx, decode.onnx)")
        return 0
    # Checked first with the command line's names (the library's own check would say path / overwrite=True).
    plan_write(args.output, FILES, TOKENIZER_FOLDER.owner("output", "--force"), overwrite=args.force)
    path = save_tokenizer(model, args.output, overwrite=args.force)
    print(f"exported {meta.get('checkpoint')} to {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from vqkit.train.run import is_run_dir, load_run_model

    model, meta = load_run_model(args.run)
    q = model.quantizer
    lines = {
        "model": type(model).__name__,
        "modality": meta.get("modality"),
        "quantizer": f"{q.registry_name or type(q).__name__} {q.codebook_label}",
        "bits per vector": f"{q.bits_per_vector:g}",
        "codebook parameters": q.num_codebook_parameters,
        "model parameters": sum(p.numel() for p in model.parameters()),
    }
    if meta.get("item_shape"):
        lines["item shape"] = tuple(meta["item_shape"])
        lines["bits per item"] = f"{model.bits_per_item(tuple(meta['item_shape'])):g}"
    if meta.get("sample_rate"):
        lines["sample rate"] = meta["sample_rate"]
        lines["kbps"] = f"{getattr(model, 'bitrate_kbps')(int(meta['sample_rate'])):.3g}"  # noqa: B009
    if is_run_dir(args.run):
        lines["checkpoint"] = meta.get("checkpoint")
        if (args.run / "eval.json").exists():
            result = json.loads((args.run / "eval.json").read_text())
            for key in ("mse", "psnr", "codebook/utilization", "codebook/perplexity"):
                if key in result["metrics"]:
                    lines[f"eval {key}"] = f"{result['metrics'][key]:.4g}"
    width = max(len(k) for k in lines)
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from vqkit.train.tokenize_dataset import tokenize_command

    return tokenize_command(args)


COMMANDS = {
    "train": _train,
    "bench": _bench,
    "eval": _eval,
    "encode": _encode,
    "decode": _decode,
    "export": _export,
    "info": _info,
    "tokenize": _tokenize,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line as ``main`` reads it (``SystemExit(2)`` with a usage message when it is wrong)."""
    parser = _parser()
    # Overrides may come after options too (``--run-dir X train.steps=5``), which argparse alone rejects.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(arg.startswith("-") or "=" not in arg for arg in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("vqkit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError, OSError) as err:
        print(f"vqkit {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
