"""benchmarks/quantizer_references_extra.py and the option variants of bench_quantizers.py, at tiny sizes: each new
vector-quantize-pytorch adapter gives vqkit's codes from the same state (eval and first training step), the
grouped codes' reorder against a loop, the orthogonal loss's value against theirs and a numpy oracle."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import vqkit
from tests.conftest import load_script
from vqkit.quantizers import VQ

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_quantizers.py"
N, DIM = 256, 16
# Rates with two levels per group for both grouped quantizers (8 bits: two groups of two 2-bit LFQ levels).
CASES = {
    "grouped_residual_vq": 6,
    "grouped_residual_lfq": 8,
    "residual_vq[shared_codebook]": 6,
    "vq[orthogonal_weight=10]": 6,
    "random_projection": 6,
    "latent_quantize": 6,
    "bsq": 6,
    "lfq": 6,  # its data init runs before the copy (quantizer_cases.build_case), so the first step agrees
}
HAS_VQP = importlib.util.find_spec("vector_quantize_pytorch") is not None
needs_vqp = pytest.mark.skipif(not HAS_VQP, reason="needs vector-quantize-pytorch (the bench extra)")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "_test_bench_references_extra")


@pytest.fixture(scope="module")
def extra(bench: ModuleType) -> ModuleType:
    import quantizer_references_extra  # on sys.path once bench_quantizers.py is loaded

    return quantizer_references_extra


@pytest.fixture(scope="module")
def cases(bench: ModuleType) -> ModuleType:
    import quantizer_cases

    return quantizer_cases


@needs_vqp
@pytest.mark.parametrize("name", list(CASES))
def test_codes_match_from_the_same_state(bench: ModuleType, name: str) -> None:
    x = bench.make_input(N, DIM)
    case = bench.build_case(name, DIM, CASES[name], x.reshape(N, DIM))
    assert not isinstance(case, str), case
    result = bench.bench_case(case, x, (1, 1, 1))
    vqp = result["vqp"]
    assert "n/a" not in vqp, vqp
    assert vqp["eval_agreement_pct"] == 100.0 and vqp["step1_agreement_pct"] == 100.0, (name, vqp)


@needs_vqp
def test_grouped_codes_are_level_major(bench: ModuleType, extra: ModuleType) -> None:
    groups, batch, length, levels = 3, 2, 5, 4
    codes = torch.randint(0, 100, (groups, batch, length, levels))
    expected = torch.empty(batch, length, levels * groups, dtype=codes.dtype)
    for g in range(groups):
        for level in range(levels):
            expected[:, :, level * groups + g] = codes[g, :, :, level]
    assert torch.equal(extra._level_major(codes), expected)
    # And vqkit's own layout: group g's codes of level l sit at column l * G + g.
    q = bench.build_case("grouped_residual_vq", DIM, 6, None).quantizer.eval()
    x = bench.make_input(N, DIM)
    ours = q.encode(x)
    for g, group in enumerate(q.groups):
        part = group.encode(x[..., g * DIM // 2 : (g + 1) * DIM // 2])
        assert torch.equal(ours[..., g :: len(q.groups)], part)


def _orthogonal_oracle(codebook: np.ndarray, used: np.ndarray) -> float:
    unit = codebook[used] / np.linalg.norm(codebook[used], axis=1, keepdims=True)
    gram = unit @ unit.T
    m = len(unit)
    return float((gram**2).sum() / m**2 - 1.0 / m)


@needs_vqp
def test_orthogonal_loss_equals_theirs_and_the_oracle(bench: ModuleType) -> None:
    x = bench.make_input(N, DIM)
    case = bench.build_case("vq[orthogonal_weight=10]", DIM, 6, x.reshape(N, DIM))
    q = case.quantizer.train()
    ref = bench.build_reference(q)
    ref.module.train()
    batch = x[:2]  # 32 vectors: at most 32 of the 64 codes used, so the term is on a subset
    ours = q(batch)
    _, codes, _, breakdown = ref.module(batch, return_loss_breakdown=True)
    assert torch.equal(ours.codes, codes[..., None])
    used = np.zeros(q.codebook_size, dtype=bool)
    used[ours.codes.reshape(-1).numpy()] = True
    assert 1 < used.sum() < q.codebook_size  # a real subset
    oracle = _orthogonal_oracle(q.codebook.vectors.detach().double().numpy(), used)
    assert ours.losses["orthogonal"].item() == pytest.approx(oracle, rel=1e-5)
    assert breakdown.orthogonal_reg.item() == pytest.approx(oracle, rel=1e-5)
    assert q.loss_weights["orthogonal"] == ref.module.orthogonal_reg_weight == 10.0


@needs_vqp
def test_running_affine_state_gives_the_same_codes_table(bench: ModuleType) -> None:
    """``vq[affine=running]``: not in the agreement test, since its forward moves its input statistics before it
    searches, in eval too; the copied state itself must give vqkit's table of codes ``a c' + b``."""
    x = bench.make_input(N, DIM)
    q = bench.build_case("vq[affine=running]", DIM, 6, x.reshape(N, DIM)).quantizer
    for trained in (False, True):
        if trained:  # moved statistics and codes: the bias-corrected averages are what is copied
            q.train()
            for _ in range(2):
                q(x * 2.0 + 0.5)
            q.eval()
            with torch.no_grad():
                q.codebook.weight.add_(0.1 * torch.randn_like(q.codebook.weight))
            assert int(q.code_affine.step) == 2
        ref = bench.build_reference(q)
        cb = ref.module._codebook
        assert cb.affine_param and ref.settings["affine_param_codebook_decay"] == 0.0
        code_sd = cb.codebook_variance.clamp(min=1e-5).sqrt()
        batch_sd = cb.batch_variance.clamp(min=1e-5).sqrt()
        theirs = (cb.embed - cb.codebook_mean) * (batch_sd / code_sd) + cb.batch_mean
        ours = q.codebook.table(q.code_affine).detach()
        assert torch.allclose(theirs[0], ours, atol=1e-5), trained


def test_variants_are_cases(bench: ModuleType, cases: ModuleType) -> None:
    names = cases.case_names()
    for variant, (base, _) in cases.VARIANTS.items():
        assert names.index(variant) > names.index(base)
    assert bench.parse_args(["--only", "vq[orthogonal_weight=10],fsq"]).names == [
        "fsq",
        "vq[orthogonal_weight=10]",
    ]
    case = bench.build_case("residual_vq[shared_codebook]", DIM, 6, None)
    assert case.kwargs["shared_codebook"] and case.quantizer.codebook is not None
    # 7 bits: levels of 16 and 8 codes, which one shared codebook cannot hold.
    note = bench.build_case("residual_vq[shared_codebook]", DIM, 7, None)
    assert isinstance(note, str) and note.startswith("skipped 'residual_vq[shared_codebook]': codebook_size")


@needs_vqp
def test_notes_and_refusals(bench: ModuleType, cases: ModuleType) -> None:
    fsq = bench.build_case("grouped_residual_fsq", DIM, 6, None).quantizer
    assert "symmetry-preserving" in bench.build_reference(fsq)
    for name in ("qinco", "multiscale_vq"):  # counterparts exist: a note, not "no equivalent"
        note = bench.build_reference(vqkit.create_quantizer(name, dim=DIM))
        assert note.startswith("not matched yet: its "), (name, note)
    unmatched = ["sampling=softmax", "sampling=gumbel", "entropy_weight=0.1", "affine=learned", "sync_nu=0.5"]
    for option in unmatched:
        q = bench.build_case(f"vq[{option}]", DIM, 6, None).quantizer
        assert bench.build_reference(q).startswith("NoEquivalent: its "), option
        # Never dropped in a composite either: its levels are refused the same way (where vqkit builds one).
        name = option.split("=")[0]
        try:
            rvq = vqkit.create_quantizer("residual_vq", dim=DIM, codebook_size=8, **{name: getattr(q, name)})
        except ValueError:  # sampling="gumbel": a residual level's relaxation would never train
            continue
        assert bench.build_reference(rvq).startswith("NoEquivalent: its "), option
    latent = bench.build_case("latent_quantize", DIM, 6, None).quantizer
    with torch.no_grad():
        latent.values[0, 1] += 0.1  # the grid no longer evenly spaced
    assert "evenly spaced" in bench.build_reference(latent)
    square = vqkit.create_quantizer("latent_quantize", dim=3, levels=[4, 4, 4])
    assert "projections" in bench.build_reference(square)


@needs_vqp
def test_their_sync_update_scales_the_input_gradient() -> None:
    """The note on ``vq[sync_nu=0.5]``: vector-quantize-pytorch's ``sync_update_v`` reaches the input, not the codes."""
    from vector_quantize_pytorch import VectorQuantize

    torch.manual_seed(0)
    theirs: Any = VectorQuantize(
        dim=4,
        codebook_size=8,
        learnable_codebook=True,
        ema_update=False,
        sync_update_v=0.5,
        rotation_trick=False,
        commitment_weight=0.0,
    ).train()
    x = torch.randn(1, 5, 4, requires_grad=True)
    theirs(x)[0].sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.full_like(x, 1.5))
    assert theirs._codebook.embed.grad is None
    # vqkit's: nu times the output's gradient (ones) reaches each used code once per vector that chose it.
    ours = vqkit.create_quantizer("vq", dim=4, codebook_size=8, sync_nu=0.5).train()
    assert isinstance(ours, VQ)
    with torch.no_grad():
        ours.codebook.weight.copy_(theirs._codebook.embed[0])
    out = ours(x.detach())
    out.quantized.sum().backward()
    counts = torch.bincount(out.codes.reshape(-1), minlength=8).float()
    assert ours.codebook.weight.grad is not None
    assert torch.allclose(ours.codebook.weight.grad, 0.5 * counts[:, None].expand(8, 4))
