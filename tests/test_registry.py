"""Registry: names, presets, overrides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import vqkit
from vqkit.registry import (
    preset_defaults,
    quantizer_from_config,
    register_preset,
    register_quantizer,
    unregister_quantizer,
)


@pytest.fixture
def temporary_names() -> Iterator[list[str]]:
    """Names a test registers; removed afterwards whatever happens (the registry is global)."""
    names: list[str] = []
    yield names
    for name in names:
        if name in vqkit.list_quantizers():
            unregister_quantizer(name)


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
    assert q.codebook.options.distance == "cosine" and q.codebook.options.restart == "anchor"  # type: ignore[union-attr]
    q2 = vqkit.create_quantizer("ema_vq", dim=8, update="grad")
    assert q2.codebook.options.update == "grad"  # type: ignore[union-attr]
    assert preset_defaults("ema_vq") == {"update": "ema"}


def test_overwriting_a_name_warns(temporary_names: list[str]) -> None:
    temporary_names.append("_tmp_preset")
    register_preset("_tmp_preset", vqkit.VQ, update="ema")
    with pytest.warns(UserWarning, match="overwriting quantizer '_tmp_preset'"):
        register_preset("_tmp_preset", vqkit.FSQ)


class _MyVQ(vqkit.VQ):
    """A user's subclass with an argument of its own."""

    def __init__(self, dim: int, codebook_size: int = 16, *, temperature: float = 1.0) -> None:
        super().__init__(dim, codebook_size)
        self.temperature = temperature


def test_an_unregistered_subclass_does_not_save_as_its_parent() -> None:
    """Defect D4: it used to serialize as ``"vq"`` with its extra argument, so loading raised or built a VQ."""
    q = _MyVQ(4, 8, temperature=0.5)
    with pytest.raises(TypeError, match="_MyVQ is not registered"):
        q.to_config()


def test_a_registered_subclass_round_trips_with_its_own_arguments(temporary_names: list[str]) -> None:
    temporary_names.append("_my_vq")
    register_quantizer("_my_vq")(_MyVQ)
    q = _MyVQ(4, 8, temperature=0.5)
    config = q.to_config()
    assert config == {
        "name": "_my_vq",
        "kwargs": {"dim": 4, "codebook_size": 8, "temperature": 0.5},
    }
    clone = quantizer_from_config(config)
    assert type(clone) is _MyVQ and clone.temperature == 0.5  # type: ignore[attr-defined]
    # Unregistering leaves the class unregistered again (the name is the class's own, not inherited).
    unregister_quantizer("_my_vq")
    with pytest.raises(TypeError, match="not registered"):
        q.to_config()
    assert vqkit.VQ(4, 8).to_config()["name"] == "vq"


def test_an_argument_not_stored_under_its_name_is_a_clear_error(temporary_names: list[str]) -> None:
    class Forgetful(vqkit.VQ):
        def __init__(self, dim: int, *, sharpness: float = 2.0) -> None:
            super().__init__(dim, 8)

    temporary_names.append("_forgetful")
    register_quantizer("_forgetful")(Forgetful)
    with pytest.raises(TypeError, match=r"takes 'sharpness' but does not store it as self.sharpness"):
        Forgetful(4).to_config()


def test_quantizer_from_config_names_bad_input() -> None:
    with pytest.raises(ValueError, match="config: expected a dict with 'name'"):
        quantizer_from_config({"kwargs": {}})
    with pytest.raises(ValueError, match="config.kwargs: expected a dict"):
        quantizer_from_config({"name": "vq", "kwargs": [1]})
    with pytest.raises(KeyError, match="unknown quantizer 'nope'"):
        quantizer_from_config({"name": "nope"})


def test_unknown_codebook_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="decya: unexpected keyword argument"):
        vqkit.VQ(4, 8, decya=0.9)  # type: ignore[call-arg]


def test_codebook_options_reach_every_codebook() -> None:
    q = vqkit.create_quantizer("ivq", dim=8, lines=4, decay=0.9, restart="dead")
    for level in q.level_list:  # type: ignore[attr-defined]
        for cb in level.codebook_list:
            assert cb.options.decay == 0.9 and cb.options.restart == "dead" and cb.options.init == "kmeans"
    assert q.to_config()["kwargs"]["kmeans_iters"] == 5  # IVQ's own default, pinned in the config
    clone = quantizer_from_config(q.to_config())
    assert clone.level_list[0].codebook_list[0].options == q.level_list[0].codebook_list[0].options  # type: ignore[attr-defined]
