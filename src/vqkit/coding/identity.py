"""``tokenizer_identity``: a short hash that tells one trained tokenizer from another.

A coded file is only meaningful to the tokenizer whose codes it holds: the same indices decode to other
vectors under other weights. The identity hashes the model's config (``to_config()``, canonical JSON) and
every tensor of its ``state_dict`` (name, dtype, shape, bytes), so a run's checkpoint and the tokenizer
exported from it share one identity, and any retraining, fine-tuning or change of settings gives another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def tokenizer_identity(model: Any) -> str:
    """``"sha256:<32 hex digits>"`` of ``model.to_config()`` and ``model.state_dict()``."""
    config = model.to_config() if hasattr(model, "to_config") else {"type": type(model).__name__}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode("utf-8"))
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:32]}"
