"""Registry: names, presets, overrides."""

from __future__ import annotations

import pytest

import vqkit
from vqkit.registry import preset_defaults, register_preset


def test_baselines_are_registered() -> None:
    expected = {
        "vq",
        "ema_vq",
        "cvq",
        "factorized_vq",
        "residual_vq",
        "product_vq",
        "fsq",
        "lfq",
        "residual_fsq",
        "residual_lfq",
    }
    assert expected <= set(vqkit.list_quantizers())


def test_presets_apply_defaults_and_accept_overrides() -> None:
    q = vqkit.create_quantizer("cvq", dim=8, codebook_size=64)
    assert q.codebook.distance == "cosine" and q.codebook.restart == "anchor"  # type: ignore[union-attr]
    q2 = vqkit.create_quantizer("ema_vq", dim=8, update="grad")
    assert q2.codebook.update_mode == "grad"  # type: ignore[union-attr]
    assert preset_defaults("ema_vq") == {"update": "ema"}


def test_overwriting_a_name_warns() -> None:
    register_preset("_tmp_preset", vqkit.VQ, update="ema")
    with pytest.warns(UserWarning, match="overwriting quantizer '_tmp_preset'"):
        register_preset("_tmp_preset", vqkit.FSQ)
    from vqkit import registry

    registry._REGISTRY.pop("_tmp_preset")
