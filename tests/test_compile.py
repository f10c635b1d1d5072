"""``torch.compile(q, fullgraph=True)``: the training forward (and its backward), ``encode`` and ``decode`` of
every registered quantizer trace into one graph with no break, and compute what eager mode computes.

``aot_eager`` traces forward and backward through AOTAutograd without generating kernels, so the test checks
graph capture (the property ``fullgraph`` asks for) on CPU in seconds; code generation is the compiler's.
"""

from __future__ import annotations

import pytest
import torch

import vqkit
from tests.conftest import DIM, small_kwargs

pytestmark = pytest.mark.slow


def test_every_quantizer_compiles_without_graph_breaks(quantizer_name: str) -> None:
    q = vqkit.create_quantizer(quantizer_name, **small_kwargs(quantizer_name))
    x = torch.randn(4, 8, DIM)
    q(x)  # first-batch k-means runs eagerly (it reads the initialized flag once, then caches it)
    torch._dynamo.reset()
    compiled = torch.compile(q, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    eager_out = q(x)
    torch.manual_seed(1)
    inp = x.clone().requires_grad_(True)
    out = compiled(inp)
    (out.quantized.sum() + out.loss).backward()
    assert inp.grad is not None and torch.isfinite(inp.grad).all()
    assert out.codes.shape == eager_out.codes.shape
    q.eval()
    encode = torch.compile(q.encode, fullgraph=True, backend="aot_eager")
    decode = torch.compile(q.decode, fullgraph=True, backend="aot_eager")
    codes = encode(x)
    assert torch.equal(codes, q.encode(x))
    assert torch.equal(decode(codes), q.decode(codes))
    eval_out = torch.compile(q, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(eval_out.codes, codes)
    # Traced, the usage metrics are computed inside the graph (plain dicts), eagerly on first read: the same.
    assert torch.equal(eval_out.metrics["utilization"], q(x).metrics["utilization"])
