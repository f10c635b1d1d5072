"""``vqkit encode --entropy-code`` and ``vqkit decode`` of coded files: where a tokenizer's code prior lives.

The prior (``vqkit.coding.CodePrior``) is stored with the tokenizer, as ``code_prior.safetensors`` in the run
directory or the exported tokenizer's folder, and records the ``tokenizer_identity`` it was fitted for:

* ``encode --entropy-code`` on a **run directory** uses its prior, and fits one when there is none, or when
  the one there belongs to another checkpoint (training went on): the codes of the run's training split (its
  first ``PRIOR_ITEMS`` items) under the default floor. It is written once, atomically, and reused.
* An **exported tokenizer** has no data to fit on: copy the run's ``code_prior.safetensors`` into its folder,
  or pass ``--prior FILE``. A prior of another tokenizer is refused, never refitted over.
* ``decode`` reads plain archives and coded files alike (told apart by their magic bytes); a coded file needs
  the prior it was coded under (the folder's, or ``--prior FILE``), and the tokenizer whose codes it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqkit.coding import CodePrior, is_coded_file, read_coded_file, read_header, tokenizer_identity
from vqkit.coding.backend import constriction
from vqkit.coding.bitstream import CodedFileError
from vqkit.coding.prior import count_codes
from vqkit.train.batches import batches
from vqkit.train.files import InputFileError, read_codes, write_codes
from vqkit.train.run import is_run_dir, load_split, run_config
from vqkit.utils.atomic import atomic_write_bytes

PRIOR_FILE = "code_prior.safetensors"
PRIOR_ITEMS = 10_000


def fit_run_prior(run: Path, model: Any, *, max_items: int = PRIOR_ITEMS) -> CodePrior:
    """The prior of ``model``'s codes on the first ``max_items`` items of the run's training split."""
    config = run_config(run)
    dataset = load_split(config, "train")
    sizes = model.quantizer.alphabet_sizes
    counts = None
    with torch.no_grad():
        for x in batches(dataset, config.eval.batch_size, max_items):
            batch = count_codes(model.encode(x), sizes)
            counts = batch if counts is None else counts + batch
    if counts is None:
        raise ValueError(f"run: {str(run)!r} has an empty training split; no code prior can be fitted")
    items = min(len(dataset), max_items)
    note = f"fitted on the first {items} items of the training split of {run}"
    return CodePrior(counts, tuple(sizes), identity=tokenizer_identity(model), note=note)


def load_prior(run: Path, model: Any, prior: Path | None, *, fit: bool) -> CodePrior:
    """The prior to code ``model``'s codes under (see the module docstring); ``fit``: encode may fit one."""
    constriction()  # the missing extra is named before any work
    identity = tokenizer_identity(model)
    path = prior or run / PRIOR_FILE
    if path.is_file() or prior is not None:
        found = CodePrior.load(path)
        if found.identity == identity:
            return found
        if prior is not None or not (fit and is_run_dir(run)):
            raise ValueError(
                f"prior: {str(path)!r} was fitted for tokenizer {found.identity!r}, not this one ({identity}); "
                "pass the prior fitted for this tokenizer"
            )
    if not (fit and is_run_dir(run)):
        hint = (
            "the prior the file was coded under"
            if is_run_dir(run)
            else f"or copy the {PRIOR_FILE} of the run it was exported from into it"
        )
        raise FileNotFoundError(f"prior: {str(run)!r} holds no {PRIOR_FILE}; pass --prior FILE ({hint})")
    fitted = fit_run_prior(run, model)
    fitted.save(path)
    print(f"fitted the code prior: {path} ({fitted.note})")
    return fitted


def encode_prior(run: Path, model: Any, entropy_code: bool, prior: Path | None) -> CodePrior | None:
    """``encode``'s prior: ``None`` for a plain archive; ``--prior`` alone is a usage error."""
    if prior is not None and not entropy_code:
        raise ValueError(f"--prior: only with --entropy-code, got --prior {prior}")
    return load_prior(run, model, prior, fit=True) if entropy_code else None


def write_any_codes(
    path: Path, codes: list[torch.Tensor], meta: dict[str, Any], prior: CodePrior | None
) -> str:
    """Write a plain archive (``prior is None``) or a coded file; returns what the command prints."""
    if prior is None:
        write_codes(path, codes, meta)
        return ""
    from vqkit.coding import encode_codes

    data = encode_codes(codes, prior, meta=meta)
    payload = len(read_header(data, str(path))[1])
    atomic_write_bytes(path, data)
    per_item = 8 * payload / max(len(codes), 1)
    return f", {len(data)} bytes entropy-coded ({per_item:.1f} payload bits per item)"


def read_any_codes(
    path: Path, run: Path, model: Any, prior: Path | None
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The codes and meta of a plain archive or of a coded file (which must belong to ``model``)."""
    if not is_coded_file(path):
        return read_codes(path)
    header, _ = read_header(path.read_bytes(), str(path))
    identity = tokenizer_identity(model)
    if header["identity"] != identity:
        raise CodedFileError(
            f"codes: {str(path)!r} holds the codes of tokenizer {header['identity']!r}; {str(run)!r} is {identity}"
        )
    return read_coded_file(path, load_prior(run, model, prior, fit=False))


def check_codes_target(path: Path) -> None:
    """``encode -o`` may replace an earlier codes archive or coded file, never another file (a typo'd input)."""
    if path.is_dir():
        raise FileExistsError(f"-o/--output: expected a codes file to write, got the folder {str(path)!r}")
    if path.exists() and not is_coded_file(path):
        try:
            read_codes(path)
        except InputFileError as err:
            raise FileExistsError(
                f"-o/--output: {str(path)!r} exists and is not a vqkit codes file, so it is not replaced; "
                "remove it or choose another name"
            ) from err
