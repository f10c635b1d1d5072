"""IVQ: layouts and rate, hexagram tables and encode against numpy, the two-code fast path, structure losses and
their ablations, cross-modal decoding, and a stability run with the default settings."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

import vqkit
from vqkit.functional import hexagram
from vqkit.functional.block_search import binary_test
from vqkit.functional.contrastive import symmetric_contrastive
from vqkit.functional.search import nearest_code
from vqkit.quantizers.composite import ResidualQuantizer
from vqkit.quantizers.ivq import IVQ
from vqkit.quantizers.ivq_level import resolve_levels
from vqkit.types import Distance, QuantizerOutput


def make(dim: int = 24, **kwargs: object) -> IVQ:
    q = vqkit.create_quantizer("ivq", dim=dim, **kwargs)
    assert isinstance(q, IVQ)
    return q


def trained(q: IVQ, x: torch.Tensor, steps: int = 1) -> IVQ:
    q.train()
    for _ in range(steps):
        q(x)
    return q.eval()


# ---------------------------------------------------------------------------------------------- layouts and rate
def test_presets_for_six_lines() -> None:
    assert resolve_levels("yin-yang", 6) == ((2, 6),) * 4
    assert resolve_levels("bottom-up", 6) == ((2, 6), (4, 3), (8, 2), (64, 1))
    assert resolve_levels("top-down", 6) == ((64, 1), (8, 2), (4, 3), (2, 6))
    assert resolve_levels("bottom-up", 4) == ((2, 4), (4, 2), (16, 1))
    assert resolve_levels([[2, 12], [4096, 1]], 12) == ((2, 12), (4096, 1))


@pytest.mark.parametrize(
    ("levels", "codebooks", "stored", "size", "params"),
    [
        ("yin-yang", "shared", 8, "4×2", 4 * 2 * 4),
        ("bottom-up", "shared", 78, "2+4+8+64", 2 * 4 + 4 * 8 + 8 * 12 + 64 * 24),
        ("top-down", "shared", 78, "64+8+4+2", 2 * 4 + 4 * 8 + 8 * 12 + 64 * 24),
        ("bottom-up", "per_block", 104, "2×6+4×3+8×2+64×1", 2 * 24 + 4 * 24 + 8 * 24 + 64 * 24),
    ],
)
def test_rate_and_codebook_accounting(
    levels: str, codebooks: str, stored: int, size: str, params: int
) -> None:
    q = make(levels=levels, codebooks=codebooks)
    assert q.alphabet_sizes == (64,) * 4
    assert q.bits_per_vector == 24.0  # the rate of residual VQ 4×64
    assert q.stored_codes == stored
    assert q.codebook_label == size
    assert q.num_codebook_parameters == params


def test_twelve_lines_yin_yang() -> None:
    q = make(dim=24, lines=12, structure_rows=256)
    assert q.bits_per_vector == 48.0 and q.alphabet_sizes == (4096,) * 4
    x = torch.randn(64, 24)
    out = q(x)
    assert out.codes.shape == (64, 4) and int(out.codes.max()) < 4096
    assert torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------------- numpy oracles
@pytest.mark.parametrize("codebooks", ["shared", "per_block"])
def test_hexagram_table_against_numpy(codebooks: str) -> None:
    q = make(levels="bottom-up", codebooks=codebooks, init="gaussian")
    for level in q.level_list:
        books = [cb.weight.detach().numpy() for cb in level.codebook_list]
        g = 6 // level.blocks
        expected = np.stack(
            [
                np.concatenate(
                    [
                        books[j if codebooks == "per_block" else 0][int(bits[j * g : (j + 1) * g], 2)]
                        for j in range(level.blocks)
                    ]
                )
                for bits in (format(h, "06b") for h in range(64))
            ]
        )
        np.testing.assert_array_equal(level.hexagram_table().detach().numpy(), expected)


def _numpy_encode(q: IVQ, x: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Residual nearest-code search written from the definition, in float64."""
    residual = x.copy()
    codes = np.zeros((x.shape[0], len(q.level_list)), dtype=np.int64)
    for i, level in enumerate(q.level_list):
        books = [cb.weight.detach().double().numpy() for cb in level.codebook_list]
        g, d = q.lines // level.blocks, level.sub_dim
        q_level = np.zeros_like(residual)
        for j in range(level.blocks):
            book = books[j if len(books) > 1 else 0]
            part = residual[:, j * d : (j + 1) * d]
            if distance == "l2":
                best = ((part[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
            else:
                best = (part @ (book / np.linalg.norm(book, axis=1, keepdims=True)).T).argmax(1)
            codes[:, i] += best << (g * (level.blocks - 1 - j))
            q_level[:, j * d : (j + 1) * d] = book[best]
        residual = residual - q_level
    return codes


@pytest.mark.parametrize(
    ("levels", "codebooks", "distance"),
    [
        ("yin-yang", "shared", "l2"),
        ("yin-yang", "per_block", "l2"),
        ("yin-yang", "shared", "cosine"),
        ("bottom-up", "per_block", "l2"),
        ("top-down", "shared", "l2"),
        ([[2, 6], [2, 6], [4, 3], [2, 6]], "shared", "cosine"),
    ],
)
def test_encode_and_forward_against_numpy_reference(levels: object, codebooks: str, distance: str) -> None:
    # Covers the joint search of leading two-code levels (yin-yang) and the explicit residual search after it.
    x = torch.randn(3000, 24, dtype=torch.float64)
    q = trained(make(levels=levels, codebooks=codebooks, distance=distance).double(), x)
    expected = _numpy_encode(q, x.numpy(), distance)
    np.testing.assert_array_equal(q.encode(x).numpy(), expected)
    np.testing.assert_array_equal(q(x).codes.numpy(), expected)


def test_joint_search_matches_the_residual_search_in_float32() -> None:
    # Float32 rounding differs between x . w - q . w and (x - q) . w; only near-ties may flip.
    x = torch.randn(20000, 24)
    q = trained(make(), x[:2000])
    residual, mismatched = x, 0
    codes = q.encode(x)
    for j, level in enumerate(q.level_list):
        found = level.block_codes(residual)
        mismatched += int((hexagram.blocks_to_index(found, 6) != codes[:, j]).sum())
        residual = residual - level.lookup(hexagram.block_codes(codes[:, j], 6, level.blocks))
    assert mismatched <= 0.001 * codes.numel()


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("codebooks", ["shared", "per_block"])
def test_two_code_fast_path_equals_generic_search(distance: Distance, codebooks: str) -> None:
    q = make(distance=distance, codebooks=codebooks, init="gaussian")
    level = q.level_list[0]
    x = torch.randn(4000, 24)
    fast = level.block_codes(x)
    chunks = x.reshape(-1, level.blocks, level.sub_dim)
    books = level.codebook_list
    generic = torch.stack(
        [
            nearest_code(
                chunks[:, j], books[j if len(books) > 1 else 0].weight.detach(), distance=distance
            ).codes
            for j in range(level.blocks)
        ],
        dim=1,
    )
    # Equal except where the two codes are within rounding of a tie.
    w, threshold = binary_test(level.books().detach(), distance)
    margin = (torch.einsum("nbd,bd->nb", chunks, w.expand(level.blocks, -1)) - threshold).abs()
    differ = fast != generic
    assert bool((margin[differ] < 1e-5).all())
    assert float(differ.float().mean()) < 1e-3


def test_tie_goes_to_code_zero_like_the_generic_search() -> None:
    q = make(dim=6, init="gaussian")
    level = q.level_list[0]
    with torch.no_grad():
        level.codebook_list[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x = torch.zeros(3, 6)
    assert int(level.block_codes(x).sum()) == 0


# ---------------------------------------------------------------------------------------------- one-pass forward
def _per_level_forward(q: IVQ, z: torch.Tensor, levels: None = None) -> QuantizerOutput:
    """The composite's per-level training forward (each level's lookup, ``mse_loss`` pair and estimator under
    autograd) with IVQ's structure terms: what ``IVQ._joint_forward`` replaces."""
    out = ResidualQuantizer._quantize_levels(q, z, levels)
    out.losses.update(q.structure_losses())
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"levels": "yin-yang"},
        {"levels": "bottom-up"},
        {"levels": "top-down", "codebooks": "per_block"},
        {"levels": [[2, 4]] * 3, "codebooks": "per_block"},
        {"distance": "cosine", "similarity": "dot", "temperature": 1.0},
        {"update": "ema", "hierarchy_weight": 0.0, "relation_weight": 0.0},
        {"gradient": "rotation"},
        {"restart": "dead", "init": "gaussian"},
        {"restart": "anchor", "levels": [[2, 4], [2, 4], [4, 2]]},
    ],
)
def test_one_pass_forward_equals_the_per_level_forward(kwargs: dict[str, object]) -> None:
    """Same codes, ``quantized``, metrics and codebook state bit for bit; losses and gradients to rounding."""
    new = make(dim=16, lines=4, **kwargs)
    old = copy.deepcopy(new)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        x = torch.randn(48, 16, generator=g) * 1.5
        results = []
        for q, forward in ((old, _per_level_forward), (new, IVQ._quantize_levels)):
            q.train(step < 2)  # two training steps (k-means, updates, restarts), then one in eval mode
            q.zero_grad(set_to_none=True)
            h = x.clone().requires_grad_(True)
            torch.manual_seed(step)  # dead-code restarts draw candidates
            out = forward(q, h, None)
            (out.quantized.square().mean() + out.weighted_loss(q.loss_weights)).backward()
            params = {name: p.grad for name, p in q.named_parameters()}
            results.append((out, h.grad, params, {k: v.clone() for k, v in q.state_dict().items()}))
        (a, grad_a, params_a, state_a), (b, grad_b, params_b, state_b) = results
        assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
        assert a.losses.keys() == b.losses.keys()
        for name in a.losses:
            torch.testing.assert_close(b.losses[name], a.losses[name], msg=name)
        for table, other in ((a.metrics, b.metrics), (a.position_metrics, b.position_metrics)):
            assert table.keys() == other.keys() and all(torch.equal(table[k], other[k]) for k in table)
        torch.testing.assert_close(grad_b, grad_a)
        assert params_a.keys() == params_b.keys()
        for name, grad in params_a.items():
            assert (grad is None) == (params_b[name] is None), name
            if grad is not None:
                torch.testing.assert_close(params_b[name], grad, msg=name)
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    with torch.no_grad():
        a, b = _per_level_forward(old.eval(), x), new.eval()._quantize_levels(x, None)
    assert torch.equal(a.quantized, b.quantized) and a.losses.keys() == b.losses.keys()
    assert all(torch.allclose(a.losses[k], b.losses[k]) for k in a.losses)


# ---------------------------------------------------------------------------------------------- structure losses
def test_structure_losses_named_and_ablations_are_configuration() -> None:
    x = torch.randn(64, 24)
    full = make()(x).losses
    assert {"commitment", "codebook", "hierarchy", "zong", "cuo", "cuozong"} <= set(full)
    assert "hierarchy" not in make(hierarchy_weight=0.0)(x).losses  # w.o. hierarchy
    no_structure = make(relation_weight=0.0)(x).losses  # w.o. structure
    assert not {"zong", "cuo", "cuozong"} & set(no_structure) and "hierarchy" in no_structure
    assert set(make(hierarchy_weight=0.0, relation_weight=0.0)(x).losses) == {"commitment", "codebook"}
    assert set(make(relation_terms=["cuo"])(x).losses) == {"commitment", "codebook", "hierarchy", "cuo"}
    weights = make(beta=0.5, hierarchy_weight=2.0, relation_weight=3.0).loss_weights
    assert weights == {
        "commitment": 0.5,
        "codebook": 1.0,
        "hierarchy": 2.0,
        "zong": 3.0,
        "cuo": 3.0,
        "cuozong": 3.0,
    }


def test_structure_losses_follow_their_definitions() -> None:
    q = make(levels="bottom-up", init="gaussian", relation_levels=[0, 2], temperature=0.5)
    losses = q.structure_losses()
    tables = [t.detach() for t in q.hexagram_tables()]

    def g(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive(a, b, similarity="cosine", temperature=0.5)

    hierarchy = sum(g(tables[a], tables[b]) for a, b in itertools.combinations(range(4), 2))
    torch.testing.assert_close(losses["hierarchy"].detach(), hierarchy)
    idx = torch.arange(64)
    zong, cuo, cuozong = hexagram.zong(idx, 6), hexagram.cuo(idx, 6), hexagram.cuozong(idx, 6)
    for name, per_level in {
        "zong": [g(t[zong].flip(-1), t) for t in (tables[0], tables[2])],
        "cuo": [-g(t, t[cuo]) for t in (tables[0], tables[2])],
        "cuozong": [g(t, t[cuozong]) for t in (tables[0], tables[2])],
    }.items():
        torch.testing.assert_close(losses[name].detach(), torch.stack(per_level).mean())


def _defined_structure(q: IVQ, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms from their definitions, pair by pair, on hexagrams ``rows`` (differentiable)."""

    def g(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive(a, b, similarity=q.similarity, temperature=q.temperature)

    tables = [level.hexagram_table(rows) for level in q.level_list]
    out = {
        "hierarchy": sum(g(tables[a], tables[b]) for a, b in itertools.combinations(range(len(tables)), 2))
    }
    for term in q.relation_terms:
        values = []
        for i in q.relation_levels:
            level = q.level_list[i]
            related = level.hexagram_table(getattr(hexagram, term)(rows, q.lines))
            if term == "zong":
                values.append(g(hexagram.zong_flip(related, level.blocks, q.zong_flip), tables[i]))
            else:
                values.append(g(tables[i], related) * (-1 if term == "cuo" else 1))
        out[term] = torch.stack(values).mean()
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"levels": "bottom-up", "relation_levels": [0, 2]},
        {"levels": "top-down", "codebooks": "per_block", "zong_flip": "blocks", "relation_levels": "all"},
        {"levels": [[4, 3], [2, 6], [64, 1]], "codebooks": "per_block", "relation_levels": [0, 1]},
        {"lines": 4, "levels": [[2, 4]] * 3, "dim": 16},
        {"lines": 8, "levels": [[2, 8], [4, 4]], "dim": 16, "structure_rows": 32},  # sampled rows
    ],
)
def test_gathered_structure_terms_equal_the_definitions_with_gradients(kwargs: dict[str, object]) -> None:
    """One lookup of the unit bank for every table (``ivq_structure``): the values and codebook gradients of
    the pair-by-pair definitions, for shared and per-block codebooks, mixed block widths, both zong flips and
    sampled hexagrams."""
    dim = int(kwargs.pop("dim", 24))  # type: ignore[call-overload]
    q = make(dim=dim, init="gaussian", **kwargs).double()
    torch.manual_seed(3)
    got = q.structure_losses()
    torch.manual_seed(3)
    rows = q._structure_hexagrams(torch.device("cpu"))
    expected = _defined_structure(q, rows)
    assert got.keys() == expected.keys()
    weights = dict(zip(got, [0.7, 1.3, -0.4, 2.0], strict=False))
    params = [cb.weight for level in q.level_list for cb in level.codebook_list]
    grads = torch.autograd.grad(sum(weights[k] * got[k] for k in got), params)
    ref = torch.autograd.grad(sum(weights[k] * expected[k] for k in got), params)
    for name in got:
        torch.testing.assert_close(got[name], expected[name])
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_relation_terms_reach_every_code_of_the_level() -> None:
    # The paper's argument against dead codes: a code gets gradient through its related codes. Feed data that
    # uses one code only; the cuo term still moves both codes of every level it applies to.
    q = make(relation_levels="all", hierarchy_weight=0.0, init="gaussian")
    x = torch.ones(32, 24) * 5.0
    out = q(x)
    out.losses["cuo"].backward()
    for level in q.level_list:
        grad = level.codebook_list[0].weight.grad
        assert grad is not None and bool((grad.abs().sum(-1) > 0).all())


def test_hierarchy_term_couples_the_levels() -> None:
    q = make(relation_weight=0.0, init="gaussian")
    q.structure_losses()["hierarchy"].backward()
    for level in q.level_list:
        grad = level.codebook_list[0].weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0


def test_structure_rows_samples_large_alphabets() -> None:
    """A sample of the hexagrams: the terms on the sampled rows and their related rows, looked up (they are
    not rows of the sampled tables), as the definitions say."""
    q = make(dim=16, lines=8, levels=[[2, 8], [2, 8]], structure_rows=32, init="gaussian")
    torch.manual_seed(5)
    losses = q.structure_losses()
    torch.manual_seed(5)
    rows = q._structure_hexagrams(torch.device("cpu"))
    assert rows.shape == (32,) and {"hierarchy", "zong", "cuo", "cuozong"} <= set(losses)
    level = q.level_list[0]

    def g(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive(a, b, similarity="cosine", temperature=q.temperature)

    tables = [lvl.hexagram_table(rows).detach() for lvl in q.level_list]
    related = {
        t: level.hexagram_table(getattr(hexagram, t)(rows, 8)).detach() for t in ("zong", "cuo", "cuozong")
    }
    torch.testing.assert_close(losses["hierarchy"].detach(), g(tables[0], tables[1]))
    torch.testing.assert_close(losses["zong"].detach(), g(related["zong"].flip(-1), tables[0]))
    torch.testing.assert_close(losses["cuo"].detach(), -g(tables[0], related["cuo"]))
    torch.testing.assert_close(losses["cuozong"].detach(), g(tables[0], related["cuozong"]))


def test_ema_codebooks_refuse_structure_losses() -> None:
    with pytest.raises(ValueError, match="update"):
        make(update="ema")
    q = make(update="ema", hierarchy_weight=0.0, relation_weight=0.0)
    assert set(q(torch.randn(32, 24)).losses) == {"commitment"}


# ---------------------------------------------------------------------------------------------- stability
def _train(steps: int, **kwargs: object) -> tuple[list[dict[str, float]], IVQ, float, float]:
    torch.manual_seed(0)
    dim = 24
    encoder, decoder = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)
    q = make(dim, **kwargs)
    params = [*encoder.parameters(), *decoder.parameters(), *q.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    history, first, last = [], 0.0, 0.0
    for step in range(steps):
        x = torch.randn(256, dim)
        out = q(encoder(x))
        reconstruction = (decoder(out.quantized) - x).square().mean()
        optimizer.zero_grad()
        (reconstruction + out.loss).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in out.losses.items()})
        first = float(reconstruction.detach()) if step == 0 else first
        last = float(reconstruction.detach())
    return history, q, first, last


def test_default_training_stays_finite_and_bounded() -> None:
    history, q, first, last = _train(300)
    for step in history:
        assert all(np.isfinite(v) for v in step.values()), step
    assert max(step["commitment"] for step in history) < 20.0  # no runaway encoder
    norms = [float(cb.weight.detach().norm(dim=-1).max()) for lvl in q.level_list for cb in lvl.codebook_list]
    assert max(norms) < 10.0
    assert last < 0.7 * first
    # The structure terms are optimized, not just bounded.
    assert history[-1]["zong"] < 0.5 * history[0]["zong"]
    assert history[-1]["hierarchy"] < 0.5 * history[0]["hierarchy"]
    assert float(q(torch.randn(512, 24)).metrics["utilization"]) > 0.5


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_negated_cuo_term_is_bounded_only_with_cosine_logits(similarity: str) -> None:
    # Why the default is cosine: with dot-product logits (the authors' code) -cuo can be lowered without end by
    # inflating the codebook.
    q = make(similarity=similarity, temperature=1.0, init="gaussian", hierarchy_weight=0.0)
    optimizer = torch.optim.SGD(q.parameters(), lr=0.5)
    values = []
    for _ in range(100):
        loss = q.structure_losses()["cuo"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(float(loss.detach()))
    norm = float(q.level_list[0].codebook_list[0].weight.detach().norm(dim=-1).max())
    if similarity == "cosine":
        assert min(values) >= -(2.0 + np.log(64)) - 1e-4 and norm < 10
    else:
        assert not np.isfinite(values[-1]) or (values[-1] < -1e3 and norm > 10)  # blows up (NaN at lr 0.5)


# ---------------------------------------------------------------------------------------------- cross-modal
def test_cross_modal_decoding_between_two_ivqs() -> None:
    audio, image = make(), make()
    z_image = torch.randn(100, 24) * 3
    trained(audio, torch.randn(100, 24))
    trained(image, z_image)
    codes = image.encode(z_image)
    decoded = audio.cross_decode(codes, source=image)
    assert torch.equal(decoded, audio.decode(codes))
    assert not torch.allclose(decoded, image.decode(codes))  # same indices, different codebooks


def test_cross_modal_decoding_needs_the_same_layout() -> None:
    with pytest.raises(ValueError, match="source"):
        make().cross_decode(torch.zeros(2, 4, dtype=torch.long), source=make(levels="bottom-up"))
    with pytest.raises(ValueError, match="source"):
        make(dim=12, lines=4).cross_decode(torch.zeros(2, 4, dtype=torch.long), source=make())
    with pytest.raises(TypeError, match="source"):
        make().cross_decode(torch.zeros(2, 4, dtype=torch.long), source=vqkit.create_quantizer("vq", dim=24))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- quality
def test_more_levels_lower_the_error() -> None:
    x = torch.randn(2000, 24)
    errors = []
    for depth in (1, 2, 3, 4):
        q = make(levels=[[2, 6]] * depth)
        q.init_codebook(x)
        q.eval()
        errors.append(float((q(x).quantized - x).square().mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.8 * errors[0]


def test_per_block_codebooks_fit_at_least_as_well_as_shared() -> None:
    x = torch.randn(2000, 24) * torch.linspace(0.2, 3.0, 24)  # blocks with different scales
    errors = {}
    for codebooks in ("shared", "per_block"):
        q = make(codebooks=codebooks)
        q.init_codebook(x)
        errors[codebooks] = float((q.eval()(x).quantized - x).square().mean())
    assert errors["per_block"] < errors["shared"]


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lines": 5}, "lines"),
        ({"lines": 0}, "lines"),
        ({"dim": 20}, "dim"),
        ({"levels": "sideways"}, "levels"),
        ({"levels": [[4, 6]]}, "levels"),
        ({"levels": [[2, 4]]}, "levels"),
        ({"levels": []}, "levels"),
        ({"codebooks": "some"}, "codebooks"),
        ({"relation_levels": [4]}, "relation_levels"),
        ({"relation_terms": ["yin"]}, "relation_terms"),
        ({"similarity": "l1"}, "similarity"),
        ({"temperature": 0.0}, "temperature"),
        ({"hierarchy_weight": -1.0}, "hierarchy_weight"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make(**{"dim": 24, **kwargs})  # type: ignore[arg-type]


def test_relation_groups_method() -> None:
    assert len(make().relation_groups()) == 20
    assert len(make(dim=16, lines=4).relation_groups()) == 6


def test_a_first_forward_under_inference_mode_leaves_training_working() -> None:
    # The structure terms' cached index constants are made outside inference mode, whatever mode asks first.
    q = make(dim=12, lines=6, levels=[[2, 6], [2, 6]], init="gaussian", relation_levels=[0, 1])
    with torch.inference_mode():
        q.eval()(torch.randn(8, 12))
    out = q.train()(torch.randn(8, 12, requires_grad=True))
    out.loss.backward()
