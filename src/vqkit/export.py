"""ONNX export of a quantizer's (or a tokenizer's) eval-mode ``encode`` and ``decode``.

``export_onnx(q, path, example)`` writes the folder ``path`` with ``encode.onnx`` (input ``x``, output
``codes``) and ``decode.onnx`` (input ``codes``, output ``x_hat``), and a manifest ``vqkit-onnx.json`` (the
example's shape, the opset, the rate). The graphs come from ``torch.onnx.export(dynamo=True)``; the leading axis
(the batch) is dynamic, the others are the example's. Under export the library takes its traceable paths: the
nearest-code search is one score matrix and one reduction (``vqkit.functional.search``), IVQ's block search one
pass, and the eager-only input checks (NaN, code range) are left out of the graph: the caller's runtime owns
them. Codes agree with ``q.encode`` exactly away from ties and vectors with ``q.decode`` to float tolerance
(``tests/test_export.py`` runs both in onnxruntime).

Needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` to run the files). The folder follows
``vqkit.utils.publish``'s rules: a folder holding other files is refused unless ``overwrite=True``, which
replaces only the files of an earlier export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqkit.utils.manifest import Manifest

EXPORTED = Manifest("vqkit-onnx.json", "vqkit.onnx", writer="export_onnx")
OPSET = 18


class _Method(nn.Module):
    """``model.<method>`` as a module's ``forward``, the form the exporter traces."""

    def __init__(self, model: Any, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = getattr(self.model, self.method)(x)
        return out


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: torch.Tensor,
    *,
    overwrite: bool = False,
    argument: str = "path",
    force: str = "overwrite=True",
) -> Path:
    """Write ``path/encode.onnx`` and ``path/decode.onnx`` for ``model`` (a ``Quantizer`` or a ``Tokenizer``),
    traced in eval mode on ``example`` (an input batch); returns ``path``.

    Raises:
        ImportError: the ``export`` extra is not installed.
        FileExistsError: ``path`` holds files that are not an earlier export (see the module docstring).
    """
    owner = EXPORTED.owner(argument, force)
    EXPORTED.check(path, ["encode.onnx", "decode.onnx"], owner, overwrite=overwrite)
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as err:
        raise ImportError("export_onnx: needs the export extra (pip install 'vqkit[export]')") from err
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            codes = model.encode(example)  # type: ignore[operator]
            files = {
                "encode.onnx": _onnx_bytes(_Method(model, "encode").eval(), example, "x", "codes"),
                "decode.onnx": _onnx_bytes(_Method(model, "decode").eval(), codes, "codes", "x_hat"),
            }
    finally:
        model.train(was_training)
    info = {"example_shape": list(example.shape), "codes_shape": list(codes.shape), "opset": OPSET}
    return EXPORTED.publish(path, files, owner, overwrite=overwrite, info=info)


def _onnx_bytes(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> bytes:
    """One graph with a dynamic leading axis, as the bytes of its ``.onnx`` file (staged in a scratch folder:
    the exporter writes to a path, and the published folder must only ever see complete files)."""
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "graph.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(file),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        return file.read_bytes()
