"""The collapse study's library side: synthetic clusters, collapse measures, k-means init from an encoder."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import vqkit
from vqkit.data import gaussian_clusters
from vqkit.metrics import code_coverage, collapse_scores, modes_kept, tokens_collapse


@pytest.mark.parametrize("dim", [2, 3, 4, 8])
def test_gaussian_clusters_are_standardized_and_balanced(dim: int) -> None:
    x, labels = gaussian_clusters(dim, seed=1)
    assert x.shape == (10_000, dim) and labels.shape == (10_000,)
    torch.testing.assert_close(x.mean(0), torch.zeros(dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(dim), atol=1e-5, rtol=0)
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))
    assert torch.equal(gaussian_clusters(dim, seed=1)[0], x)  # seeded


def test_tokens_collapse_scores() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    fair = tokens_collapse(torch.tensor([0, 1, 2, 3]), labels, num_codes=4)
    assert fair.distance == 0.0 and fair.starved_modes == 0
    # mode 0 owns three codes, mode 1 one: shares 3/4 vs 1/2
    skewed = tokens_collapse(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 0, 1]), num_codes=4)
    assert skewed.code_share.tolist() == [1.0, 0.0] and skewed.distance == pytest.approx(0.25)
    assert skewed.starved_modes == 1
    with pytest.raises(ValueError, match="codes, labels: expected equal shapes"):
        tokens_collapse(torch.zeros(3, dtype=torch.long), labels, 4)


def test_modes_kept_counts_merged_modes() -> None:
    x, labels = gaussian_clusters(2, seed=0)
    assert modes_kept(x, labels) == 10
    merged = labels.clone()
    squeezed = x.clone()
    squeezed[labels == 1] = x[labels == 0]  # mode 1's embeddings collapse onto mode 0's
    assert modes_kept(squeezed, merged) <= 9


def test_code_coverage_flags_codes_outside_the_data() -> None:
    x = torch.randn(2000, 2)
    inside = x[:8].clone()
    outside = torch.full((8, 2), 50.0)
    cov = code_coverage(x, torch.cat([inside, outside]))
    assert cov.codes_inside == pytest.approx(0.5)
    assert cov.embeddings_covered == pytest.approx(0.95, abs=0.01)


def test_init_codebook_for_composites_and_scalar_error() -> None:
    x = torch.randn(4000, 4)
    rvq = vqkit.ResidualVQ(4, 16, num_quantizers=2)
    rvq.init_codebook(x)
    assert all(bool(stage.codebook.initialized) for stage in rvq.stage_list)  # type: ignore[union-attr]
    pvq = vqkit.ProductVQ(4, 8, num_groups=2)
    pvq.init_codebook(x)
    codes = pvq.eval().encode(x)
    assert all(codes[:, j].unique().numel() == 8 for j in range(2))  # k-means spreads every group's codes
    with pytest.raises(TypeError, match="FSQ has no codebook to initialize"):
        vqkit.FSQ(4).init_codebook(x)
    with pytest.raises(ValueError, match=r"vectors: expected \[N, 4\]"):
        vqkit.VQ(4, 8).init_codebook(torch.randn(10, 3))


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, o))


def _vq_vae(pretrain: bool, seed: int, steps: int = 300) -> tuple[float, int, int]:
    """The paper's synthetic setting, scaled down: 2-D clusters, MLP encoder/decoder, EMA VQ with 128 codes
    (decay 0.9), AdamW 1e-3, batch 256; k-means init from an untrained encoder on the first batch, or from the
    pretrained encoder (pretrain-then-finetune)."""
    torch.manual_seed(seed)
    x, labels = gaussian_clusters(2, seed=seed)
    enc, dec = _mlp(2, 2), _mlp(2, 2)
    q = vqkit.VQ(2, 128, update="ema", decay=0.9, init="kmeans")
    g = torch.Generator().manual_seed(seed)

    def batches() -> torch.Tensor:
        return x[torch.randint(len(x), (256,), generator=g)]

    if pretrain:
        opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=1e-3)
        for _ in range(steps):
            b = batches()
            loss = (dec(enc(b)) - b).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        vqkit.kmeans_init_from_encoder(q, enc, [x])
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=1e-3)
    for _ in range(steps):
        b = batches()
        out = q(enc(b))
        loss = (dec(out.quantized) - b).pow(2).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        codes = q.eval().encode(enc(x))[:, 0]
    collapse = tokens_collapse(codes, labels, 128)
    return collapse.distance, collapse.starved_modes, codes.unique().numel()


@pytest.mark.parametrize("seed", [0, 1])
def test_pretrained_kmeans_init_prevents_tokens_collapse(seed: int) -> None:
    random_distance, random_starved, random_used = _vq_vae(pretrain=False, seed=seed)
    pre_distance, pre_starved, pre_used = _vq_vae(pretrain=True, seed=seed)
    # Measured: seed 0: 0.32 / 4 starved / 61 codes vs 0.09 / 0 / 128; seed 1: 0.37 / 5 / 51 vs 0.09 / 0 / 128.
    assert pre_distance < 0.5 * random_distance
    assert pre_starved == 0 < random_starved
    assert pre_used > random_used


def test_collapse_scores_follow_merged_modes() -> None:
    x, labels = gaussian_clusters(2, seed=0)
    scores = collapse_scores(x, labels, codes=labels, num_codes=10)  # one code per mode: no tokens collapse
    assert scores["num_modes"] == 10 and scores["modes_kept"] == 10
    assert scores["mode_separability"] > 0.95
    assert scores["tokens_distance"] == 0.0 and scores["starved_modes"] == 0
    squeezed = x.clone()
    squeezed[labels < 5] = 0.0  # an encoder that maps half the modes to one point
    merged = collapse_scores(squeezed, labels)
    assert merged["modes_kept"] <= 6 and merged["mode_separability"] < 0.65
    assert "tokens_distance" not in merged
    with pytest.raises(ValueError, match="num_codes: expected K with codes"):
        collapse_scores(x, labels, codes=labels)
    with pytest.raises(ValueError, match="embeddings, labels: expected one label per embedding"):
        collapse_scores(x[:5], labels)


def test_evaluate_reports_collapse_on_labelled_data() -> None:
    from vqkit.data import load_dataset
    from vqkit.models import build_model
    from vqkit.train.config import build_config
    from vqkit.train.evaluate import evaluate

    data = load_dataset("gaussian_clusters", "test", dim=2)
    config = build_config({"data": {"name": "gaussian_clusters"}, "model": {"name": "mlp_vqvae"}})
    torch.manual_seed(0)
    model = build_model(
        {"name": "mlp_vqvae", "in_dim": 2, "hidden": [16], "latent_dim": 4, "quantizer": {"name": "vq"}}
    )
    result = evaluate(model, data, config)
    assert result["collapse/num_modes"] == 10 and 0 <= result["collapse/mode_separability"] <= 1
    assert 0 <= result["collapse/tokens_distance"] <= 1  # one code per item
    assert "collapse/modes_kept" not in evaluate(model, data, config, quick=True)
    residual = build_model(
        {
            "name": "mlp_vqvae",
            "in_dim": 2,
            "hidden": [16],
            "latent_dim": 4,
            "quantizer": {"name": "residual_vq", "kwargs": {"num_quantizers": 2}},
        }
    )
    scores = evaluate(residual, data, config)
    assert "collapse/modes_kept" in scores and "collapse/tokens_distance" not in scores  # two codes per item


def test_evaluate_scores_collapse_on_the_first_items_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embeddings kept for the collapse scores are capped (host memory), at a batch boundary or inside one."""
    from vqkit.data import load_dataset
    from vqkit.metrics.codes.collapse import collapse_scores
    from vqkit.models import build_model
    from vqkit.train.config import build_config

    evaluate_module = importlib.import_module("vqkit.train.evaluate")  # the package re-exports the function

    data = load_dataset("gaussian_clusters", "test", dim=2)
    config = build_config(
        {"data": {"name": "gaussian_clusters"}, "model": {"name": "mlp_vqvae"}, "eval": {"batch_size": 64}}
    )
    torch.manual_seed(0)
    model = build_model(
        {"name": "mlp_vqvae", "in_dim": 2, "hidden": [16], "latent_dim": 4, "quantizer": {"name": "vq"}}
    ).eval()
    monkeypatch.setattr(evaluate_module, "COLLAPSE_ITEMS", 100)  # one batch and 36 items of the next
    result = evaluate_module.evaluate(model, data, config)
    x = torch.stack([data[i] for i in range(100)])
    with torch.no_grad():
        out = model(x)
    expected = collapse_scores(
        out.latent.flatten(1),
        data.labels[:100].long(),
        out.quantizer.codes.reshape(100),
        model.quantizer.codebook_size,
    )
    assert result["items"] > 100
    assert all(result[f"collapse/{k}"] == pytest.approx(v) for k, v in expected.items())
