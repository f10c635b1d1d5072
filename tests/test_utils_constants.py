"""vqkit.utils.constants: once per arguments, never an inference tensor."""

from __future__ import annotations

import torch

from vqkit.utils.constants import cached_constant

calls: list[int] = []


@cached_constant(maxsize=4)
def _ramp(n: int) -> torch.Tensor:
    calls.append(n)
    return torch.arange(n, dtype=torch.float32)


def test_made_once_per_arguments_and_usable_after_inference_mode() -> None:
    with torch.inference_mode():
        first = _ramp(5)
    assert not first.is_inference()  # made outside inference mode: later training steps may save it
    assert _ramp(5) is first and calls == [5]
    w = torch.ones(5, requires_grad=True)
    (w * _ramp(5)).sum().backward()  # saved for backward: fails on an inference tensor
    assert torch.equal(w.grad, first)
    assert _ramp(3) is not first and calls == [5, 3]
