"""Run configs: inheritance, overrides, validation, the resolved record; the shipped configs all load."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqkit.train.config import ConfigError, build_config, dump_config, load_config, read_config_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_delta_inherits_and_overrides_apply_in_order(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "seed: 1\ntrain: {steps: 10, lr: 0.1}\neval: {lpips: alex}\n")
    delta = write(
        tmp_path / "delta.yaml",
        "base: base.yaml\ndata: {name: digits}\nmodel: {name: m, quantizer: {name: vq, kwargs: {codebook_size: 8}}}\n"
        "train: {steps: 20}\n",
    )
    config = load_config(
        delta, ["train.lr=0.5", "model.quantizer.kwargs.codebook_size=16", "eval.lpips=null"]
    )
    assert config.seed == 1 and config.train.steps == 20 and config.train.lr == 0.5
    assert config.model["quantizer"]["kwargs"] == {"codebook_size": 16}
    assert config.eval.lpips is None
    again = build_config(__import__("yaml").safe_load(dump_config(config)))
    assert again == config  # the resolved record rebuilds the same config


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ("data: {name: d}\nmodel: {name: m}\ntrain: {stpes: 3}\n", [], "train.stpes"),
        ("data: {name: d}\nmodel: {name: m}\nextra: 1\n", [], "extra"),
        ("data: {name: d}\nmodel: {name: m}\n", ["train.steps=0"], "train.steps"),
        ("data: {name: d}\nmodel: {name: m}\n", ["steps=3"], "override"),
        ("data: {name: d}\nmodel: {name: m}\n", ["nosection.x=3"], "override"),
        ("model: {name: m}\n", [], "data"),
        ("data: [1, 2]\nmodel: {name: m}\n", [], "data"),
        ("data: {name: d}\nmodel: {name: m}\nseed: x\n", [], "seed"),
        ("data: {name: d\n", [], "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, overrides: list[str], match: str) -> None:
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, overrides)


def test_base_cycles_and_missing_files_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        read_config_file(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "base.yaml"))
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.data["name"] and config.model["name"] and config.model["quantizer"]["name"]
