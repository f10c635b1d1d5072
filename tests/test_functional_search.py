"""Nearest-code search against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.functional import nearest_code, pairwise_distances, search


def numpy_sq_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def numpy_cos_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    return 1.0 - xn @ cn.T


def numpy_distances(x: np.ndarray, c: np.ndarray, distance: str) -> np.ndarray:
    return numpy_sq_distances(x, c) if distance == "l2" else numpy_cos_distances(x, c)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 22])  # one row per chunk, ragged chunks, one chunk
def test_matches_numpy_reference(distance: str, chunk_bytes: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((257, 12))
    c = rng.standard_normal((37, 12))
    ref = numpy_distances(x, c, distance)
    out = nearest_code(
        torch.from_numpy(x),
        torch.from_numpy(c),
        distance=distance,  # type: ignore[arg-type]
        max_chunk_bytes=chunk_bytes,
    )
    np.testing.assert_array_equal(out.codes.numpy(), ref.argmin(1))
    np.testing.assert_allclose(out.distances.numpy(), ref.min(1), rtol=1e-9, atol=1e-9)


def test_topk_sorted_and_matches_reference() -> None:
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((50, 6)), rng.standard_normal((20, 6))
    ref = numpy_sq_distances(x, c)
    out = nearest_code(torch.from_numpy(x), torch.from_numpy(c), k=5, max_chunk_bytes=256)
    np.testing.assert_array_equal(out.codes.numpy(), np.argsort(ref, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(out.distances.numpy(), np.sort(ref, axis=1)[:, :5], rtol=1e-9, atol=1e-9)


def test_float32_agrees_with_float64_on_winner_distance() -> None:
    x, c = torch.randn(500, 64), torch.randn(300, 64)
    out32 = nearest_code(x, c)
    ref = pairwise_distances(x.double(), c.double())
    # Ties aside, fp32 may pick a different code only when it is within rounding of the best.
    chosen = ref.gather(1, out32.codes[:, None])[:, 0]
    torch.testing.assert_close(chosen, ref.min(1).values, rtol=1e-5, atol=1e-4)


def test_cached_norms_are_used() -> None:
    x, c = torch.randn(10, 4), torch.randn(6, 4)
    wrong = torch.zeros(6)
    # With zero norms the score is -2 x.c: the winner is the code of largest dot product.
    assert torch.equal(nearest_code(x, c, codebook_sqnorm=wrong).codes, (x @ c.t()).argmax(1))


def test_reverse_query_for_each_code() -> None:
    x, c = torch.randn(40, 3), torch.randn(7, 3)
    per_code = nearest_code(c, x).codes
    assert torch.equal(per_code, pairwise_distances(x, c).argmin(0))


@pytest.mark.parametrize(
    ("x_shape", "c_shape", "k"), [((5, 3), (4, 2), 1), ((5,), (4, 5), 1), ((5, 3), (4, 3), 5)]
)
def test_bad_arguments(x_shape: tuple[int, ...], c_shape: tuple[int, ...], k: int) -> None:
    with pytest.raises(ValueError, match="nearest_code"):
        nearest_code(torch.randn(*x_shape), torch.randn(*c_shape), k=k)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_code_blocks_are_merged_like_one_search(distance: str) -> None:
    # More codes than one CPU code block (1024), with a ragged last block and planted ties across blocks.
    rng = np.random.default_rng(2)
    c = rng.standard_normal((2100, 8))
    c[1500] = c[7]  # a tie across blocks: the first index must win, as in numpy's argmin
    c[2099] = c[1030]
    x = np.concatenate([rng.standard_normal((300, 8)), c[[7, 1030]] + 1e-3])
    ref = numpy_distances(x, c, distance)
    out = nearest_code(torch.from_numpy(x), torch.from_numpy(c), distance=distance)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out.codes.numpy(), ref.argmin(1))
    np.testing.assert_allclose(out.distances.numpy(), ref.min(1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(
    ("num_rows", "num_codes", "chunk_bytes"),
    [
        (257, 37, 64),
        (300, 37, 1000),
        (1000, 2100, None),
        (200, 50, 1 << 22),
    ],  # row chunks, code blocks, one tile
)
def test_nearest_rows_are_the_swapped_search(
    distance: str, num_rows: int, num_codes: int, chunk_bytes: int
) -> None:
    # Each code's nearest row from the same tiles: numpy's argmin over rows. L2 on small integers is exact in
    # float64, so rows tie often (across row chunks too) and the first row must win, as in numpy.
    rng = np.random.default_rng(3)
    if distance == "l2":
        x, c = (
            rng.integers(-2, 3, (num_rows, 6)).astype(float),
            rng.integers(-2, 3, (num_codes, 6)).astype(float),
        )
    else:
        x, c = rng.standard_normal((num_rows, 6)), rng.standard_normal((num_codes, 6))
    ref = numpy_distances(x, c, distance)
    out = nearest_code(
        torch.from_numpy(x),
        torch.from_numpy(c),
        distance=distance,  # type: ignore[arg-type]
        max_chunk_bytes=chunk_bytes,
        nearest_rows=True,
    )
    np.testing.assert_array_equal(out.codes.numpy(), ref.argmin(1))  # the search itself is unchanged
    dense = search._dense_search(torch.from_numpy(x), torch.from_numpy(c), distance, 1, None, True)  # type: ignore[arg-type]
    for found in (out, dense):  # the chunked kernel and the compiled graphs' dense one
        assert found.code_rows is not None and found.code_distances is not None
        np.testing.assert_array_equal(found.code_rows.numpy(), ref.argmin(0))
        np.testing.assert_allclose(found.code_distances.numpy(), ref.min(0), rtol=1e-9, atol=1e-9)


def test_nearest_rows_need_k_1_and_survive_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="nearest_rows=True needs k=1"):
        nearest_code(torch.randn(5, 3), torch.randn(4, 3), k=2, nearest_rows=True)
    out = nearest_code(torch.randn(0, 3), torch.randn(4, 3), nearest_rows=True)
    assert out.code_distances is not None and torch.isinf(out.code_distances).all()


@pytest.mark.parametrize("shape", [(4096, 256), (4100, 64), (100, 1024), (64 * 3 + 5, 7), (50, 9)])
def test_column_min_is_torch_min_over_rows(shape: tuple[int, int]) -> None:
    scores = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    scores[-1] = scores.min(dim=0).values  # ties in the ragged tail: the earlier row wins
    scores[shape[0] // 2, 0] = float("nan")  # a NaN is the minimum, as in torch.min
    values, rows = search._column_min(scores)
    expected = torch.min(scores, dim=0)
    assert torch.equal(rows, expected.indices)
    torch.testing.assert_close(values, expected.values, equal_nan=True)


@pytest.mark.parametrize("width", [64, 65, 100, 257, 1024])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_min_is_torch_min_over_codes(width: int, dtype: torch.dtype) -> None:
    # Small integers: many ties in every row, where the first minimum must win, as in torch.min.
    g = torch.Generator().manual_seed(width)
    scores = torch.randint(-3, 4, (70, width), generator=g).to(dtype)
    expected = torch.min(scores, dim=1)
    order = search._index_order(width, scores)
    assert order is not None
    values, indices = search._row_min_(scores.clone(), order)
    assert torch.equal(indices, expected.indices) and torch.equal(values, expected.values)
    narrower = scores[:, : width - 1].contiguous()  # a ragged last block: the tail of the same weights
    values, indices = search._row_min_(narrower.clone(), order)
    assert torch.equal(indices, torch.min(narrower, dim=1).indices)


def test_row_min_falls_back_where_its_weights_are_not_exact_and_keeps_nan_rows_in_range() -> None:
    assert (
        search._index_order(1024, torch.zeros(1, dtype=torch.bfloat16)) is None
    )  # 1023 is not a bf16 integer
    assert search._index_order(32, torch.zeros(1)) is None  # few codes: torch.min is as fast
    x, c = torch.randn(40, 8), torch.randn(300, 8)
    x[3] = float("nan")
    codes = nearest_code(x, c).codes
    assert int(codes[3]) == 0 and torch.equal(codes[:3], nearest_code(x[:3], c).codes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_codes", [1030, 2100, 3072])  # last CPU block of 6, 52 and 1,024 codes
def test_every_code_block_is_merged_whatever_its_width_and_dtype(dtype: torch.dtype, num_codes: int) -> None:
    # Small integers are exact in bf16 too, so the reference is exact and ties (first index wins) are common.
    g = torch.Generator().manual_seed(num_codes)
    x = torch.randint(-2, 3, (200, 8), generator=g).to(dtype)
    c = torch.randint(-2, 3, (num_codes, 8), generator=g).to(dtype)
    reference = torch.cdist(x.double(), c.double()).square().min(dim=1)
    out = nearest_code(x, c)
    assert torch.equal(out.codes, reference.indices)
    torch.testing.assert_close(out.distances.double(), reference.values)
