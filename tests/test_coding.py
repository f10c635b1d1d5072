"""``vqkit.coding``: code priors, range-coded token files (exact round trips, the cross-entropy bound, every
corruption named) and the held-out coded rate the evaluation reports."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_codec
from vqkit.coding import (
    CodedFileError,
    CodePrior,
    HeldOutCodedRate,
    bitstream,
    decode_codes,
    encode_codes,
    payload_bits,
    read_coded_file,
    tokenizer_identity,
    write_coded_file,
)
from vqkit.coding.prior import MAX_ALPHABET

pytest.importorskip("constriction")
ROOT = Path(__file__).resolve().parent.parent


def random_codes(rng: np.random.Generator, shape: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
    """Codes ``[*shape, C]`` with skewed (Zipf-like) frequencies, so a prior has something to learn."""
    columns = []
    for k in sizes:
        p = 1.0 / np.arange(1, k + 1) ** 1.2
        columns.append(rng.choice(k, size=shape, p=p / p.sum()))
    return torch.from_numpy(np.stack(columns, -1).astype(np.int64))


@pytest.mark.parametrize(
    ("sizes", "shape"),
    [
        ((512,), (4, 4)),  # one code per vector: an image model's 4x4 latents
        ((16, 16, 16, 16), (7,)),  # residual codes: four levels
        ((64, 128, 1), (3, 5)),  # alphabets that differ, and a position of one code (never coded)
        ((2,), (1,)),
    ],
)
def test_round_trip_is_exact(sizes: tuple[int, ...], shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    prior = CodePrior.fit(random_codes(rng, (2000,), sizes), sizes, identity="tok")
    items = random_codes(rng, (6, *shape), sizes)  # a batch [B, ..., C]: B items
    data = encode_codes(items, prior, meta={"source": "x"})
    codes, meta = decode_codes(data, prior)
    assert meta == {"source": "x"} and len(codes) == 6
    for got, want in zip(codes, items, strict=True):
        assert got.dtype == torch.int64 and torch.equal(got, want)


def test_items_of_different_lengths_and_none() -> None:
    """Audio items of several lengths (one with no frames), then a file of no items at all."""
    rng = np.random.default_rng(1)
    sizes = (32, 32)
    prior = CodePrior.fit(random_codes(rng, (500,), sizes), sizes)
    items = [random_codes(rng, (t,), sizes) for t in (5, 0, 17, 17, 1)]
    codes, _ = decode_codes(encode_codes(items, prior), prior)
    assert [c.shape for c in codes] == [i.shape for i in items]
    assert all(torch.equal(a, b) for a, b in zip(codes, items, strict=True))
    assert decode_codes(encode_codes([], prior), prior) == ([], {})


def test_fewer_positions_use_the_first_positions_of_the_prior() -> None:
    """A residual quantizer's first levels (``--num-quantizers``) code under the prior's first tables."""
    rng = np.random.default_rng(2)
    sizes = (16, 8, 4)
    prior = CodePrior.fit(random_codes(rng, (800,), sizes), sizes)
    items = random_codes(rng, (3, 10), sizes)[..., :2]
    data = encode_codes(items, prior)
    assert torch.equal(torch.stack(decode_codes(data, prior)[0]), items)
    assert bitstream.read_header(data)[0]["prior"] == prior.prefix(2).digest != prior.digest
    with pytest.raises(ValueError, match="at most 3 codes per vector"):
        encode_codes(torch.zeros(1, 4, dtype=torch.long), prior)


@pytest.mark.parametrize(("k", "c", "n"), [(64, 1, 20_000), (256, 2, 8_000), (5, 3, 30_000)])
def test_coded_size_reaches_the_cross_entropy_bound(k: int, c: int, n: int) -> None:
    """Codes drawn i.i.d. from the prior's own distributions: the payload is within 1% + 8 bytes of
    ``sum(-log2 p)`` (computed here with numpy, position by position), and not below it by more."""
    rng = np.random.default_rng(3)
    sizes = (k,) * c
    prior = CodePrior.fit(random_codes(rng, (n,), sizes), sizes)
    columns = [rng.choice(k, size=n, p=prior.probabilities(j)) for j in range(c)]
    codes = np.stack(columns, -1)
    bound = sum(float(-np.log2(prior.probabilities(j)[codes[:, j]]).sum()) for j in range(c))
    assert prior.cross_entropy_bits(codes) == pytest.approx(bound)
    measured = payload_bits(codes, prior)
    assert bound * 0.99 - 64 <= measured <= bound * 1.01 + 64, (measured, bound)


def test_the_floor_keeps_unseen_codes_codable() -> None:
    sizes = (8,)
    prior = CodePrior.fit(np.zeros((100, 1), dtype=np.int64), sizes, floor=0.5)  # only code 0 seen
    p = prior.probabilities(0)
    assert p[0] == pytest.approx(100.5 / 104) and p[1] == pytest.approx(0.5 / 104)
    items = torch.arange(8).reshape(8, 1)  # every code, seven of them never seen
    (decoded,) = decode_codes(encode_codes([items], prior), prior)[0]
    assert torch.equal(decoded, items)


def test_bad_codes_and_priors_are_refused() -> None:
    prior = CodePrior.fit(np.zeros((4, 2), dtype=np.int64), (4, 4))
    with pytest.raises(ValueError, match=r"code 1 must lie in \[0, 4\), got values in \[-1, 2\].*not coded"):
        encode_codes(torch.tensor([[[0, 2], [1, -1]]]), prior)
    with pytest.raises(ValueError, match=r"code 0 must lie in \[0, 4\)"):
        encode_codes(torch.tensor([[[4, 0]]]), prior)
    with pytest.raises(ValueError, match="expected integer codes"):
        encode_codes(torch.zeros(1, 3, 2), prior)
    with pytest.raises(ValueError, match="floor: expected a finite pseudo-count > 0"):
        CodePrior.fit(np.zeros((4, 1), dtype=np.int64), (4,), floor=0.0)
    with pytest.raises(ValueError, match=f"at most {MAX_ALPHABET} codes per position"):
        CodePrior.fit(np.zeros((4, 1), dtype=np.int64), (MAX_ALPHABET + 1,))
    with pytest.raises(ValueError, match="counts: expected zeros beyond"):
        CodePrior(np.ones((2, 4), dtype=np.int64), (4, 2))


@pytest.fixture
def coded() -> tuple[bytes, CodePrior]:
    rng = np.random.default_rng(4)
    sizes = (16, 16)
    prior = CodePrior.fit(random_codes(rng, (300,), sizes), sizes, identity="tok-a")
    return encode_codes(random_codes(rng, (4, 6), sizes), prior, meta={"n": 1}), prior


def test_truncated_files_are_named(coded: tuple[bytes, CodePrior]) -> None:
    data, prior = coded
    for size in (0, 3, 10, 19, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(CodedFileError, match=r"^codes\.vqc: truncated: "):
            decode_codes(data[:size], prior, source="codes.vqc")
    with pytest.raises(CodedFileError, match="2 unexpected bytes after the checksum"):
        decode_codes(data + b"\0\0", prior, source="codes.vqc")


def test_every_bit_flip_is_caught(coded: tuple[bytes, CodePrior]) -> None:
    """Flip each bit of the file in turn: every flip is refused, by the part of the file it hit."""
    data, prior = coded
    expected = {
        range(0, 4): ("not a vqkit entropy-coded file",),  # magic
        range(4, 6): ("format version", "checksum mismatch"),  # version: 2..65535 is too new, 0 fails the CRC
        range(6, 8): ("checksum mismatch",),  # flags
        range(8, 20): ("truncated", "unexpected bytes after the checksum"),  # the header and payload sizes
        range(20, len(data)): ("checksum mismatch",),  # header, payload, the CRC32 itself
    }
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CodedFileError) as err:
            decode_codes(bytes(flipped), prior, source="f")
        (reasons,) = [r for span, r in expected.items() if bit // 8 in span]
        assert any(reason in str(err.value) for reason in reasons), (bit, str(err.value))


def _reframe(data: bytes, version: int | None = None, header: bytes | None = None) -> bytes:
    """The same file with another version or header, its CRC32 recomputed (a well-formed file)."""
    magic, old_version, flags, head_size, payload_size = bitstream._FIXED.unpack_from(data)
    head = data[20 : 20 + head_size] if header is None else header
    payload = data[20 + head_size : 20 + head_size + payload_size]
    body = (
        bitstream._FIXED.pack(magic, version or old_version, flags, len(head), payload_size) + head + payload
    )
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_other_versions_headers_and_priors_are_refused(coded: tuple[bytes, CodePrior]) -> None:
    data, prior = coded
    assert decode_codes(_reframe(data), prior)[1] == {"n": 1}  # the helper itself changes nothing
    with pytest.raises(CodedFileError, match="f: format version 2; this vqkit reads up to version 1"):
        decode_codes(_reframe(data, version=2), prior, source="f")
    with pytest.raises(CodedFileError, match="f: invalid header: no 'identity'"):
        decode_codes(_reframe(data, header=b'{"coder": "x"}'), prior, source="f")
    with pytest.raises(CodedFileError, match="not a vqkit entropy-coded file"):
        decode_codes(b"PK\x03\x04" + data[4:], prior, source="f")
    other = CodePrior(prior.counts, prior.alphabet_sizes, prior.floor, identity="tok-b")
    with pytest.raises(CodedFileError, match="coded for 'tok-a', but the prior given belongs to 'tok-b'"):
        decode_codes(data, other)
    refitted = CodePrior(prior.counts + 1, prior.alphabet_sizes, prior.floor, identity="tok-a")
    with pytest.raises(CodedFileError, match="coded under prior .*; the prior given is"):
        decode_codes(data, refitted)
    narrower = CodePrior(prior.counts[:, :8], (8, 8), identity="tok-a")
    with pytest.raises(CodedFileError, match=r"alphabet sizes \[16, 16\]; the prior given has \[8, 8\]"):
        decode_codes(data, narrower)


def test_a_coder_that_decodes_differently_fails_the_codes_checksum(
    coded: tuple[bytes, CodePrior], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, prior = coded
    real = bitstream.range_decode

    def off_by_one(payload: bytes, p: CodePrior, n: int) -> np.ndarray:
        rows = real(payload, p, n)
        rows[0, 0] = (rows[0, 0] + 1) % 16
        return rows

    monkeypatch.setattr(bitstream, "range_decode", off_by_one)
    with pytest.raises(CodedFileError, match="decoded codes fail their checksum"):
        decode_codes(data, prior)


def test_files_are_written_whole_or_not_at_all(
    coded: tuple[bytes, CodePrior], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, prior = coded
    path = tmp_path / "codes.vqc"
    items = torch.zeros(2, 3, 2, dtype=torch.long)
    write_coded_file(path, items, prior)
    before = path.read_bytes()

    def half_then_fail(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_coded_file(path, items + 1, prior)
    with pytest.raises(OSError, match="disk full"):
        write_coded_file(tmp_path / "new.vqc", items, prior)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["codes.vqc"]
    assert torch.equal(torch.stack(read_coded_file(path, prior)[0]), items)
    path.write_bytes(before[:-7])
    with pytest.raises(CodedFileError, match=f"^{path}: truncated"):
        read_coded_file(path, prior)


def test_prior_files_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    sizes = (64, 128)
    prior = CodePrior.fit(random_codes(rng, (100,), sizes), sizes, floor=0.25, identity="sha256:x", note="n")
    path = prior.save(tmp_path / "code_prior.safetensors")
    loaded = CodePrior.load(path)
    assert loaded == prior and loaded.digest == prior.digest and loaded.note == "n"
    assert np.array_equal(loaded.counts, prior.counts) and loaded.floor == 0.25
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="prior: cannot read the code prior .*junk.safetensors"):
        CodePrior.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="prior: no code prior file at .*missing"):
        CodePrior.load(tmp_path / "missing")
    from safetensors.torch import save_file

    save_file(
        {"counts": torch.zeros(1, 2, dtype=torch.long)}, str(tmp_path / "w.safetensors"), {"format": "x"}
    )
    with pytest.raises(ValueError, match="w.safetensors' is not a vqkit code prior"):
        CodePrior.load(tmp_path / "w.safetensors")


def test_the_held_out_rate_codes_each_half_under_the_others_prior() -> None:
    """The measured rate against its oracle: both folds' cross-entropies under the other fold's prior
    (computed here from numpy counts), within the coder's 1% + a word per fold."""
    rng = np.random.default_rng(6)
    sizes = (32, 8)
    codes = random_codes(rng, (101, 9), sizes)  # 101 items of 9 vectors, in batches of 10
    rate = HeldOutCodedRate(sizes)
    for batch in codes.split(10):
        rate.update(batch)
    result = rate.compute()
    even, odd = codes[0::2].reshape(-1, 2).numpy(), codes[1::2].reshape(-1, 2).numpy()
    bound = 0.0
    for fit, coded_rows in ((even, odd), (odd, even)):
        for j, k in enumerate(sizes):
            p = np.bincount(fit[:, j], minlength=k) + 0.5
            bound += float(-np.log2(p / p.sum())[coded_rows[:, j]].sum())
    assert result["coded_bits_per_item"] * 101 == pytest.approx(bound, rel=0.01, abs=64)
    assert result["coded_bits"] == pytest.approx(result["coded_bits_per_item"] / 9)
    assert HeldOutCodedRate(sizes).compute() == {}


def test_tokenizer_identity_follows_the_weights(tmp_path: Path) -> None:
    import vqkit

    codec = tiny_codec({"name": "vq", "kwargs": {"codebook_size": 16}})
    reloaded = vqkit.load_tokenizer(vqkit.save_tokenizer(codec, tmp_path / "tok"))
    assert tokenizer_identity(reloaded) == tokenizer_identity(codec)
    with torch.no_grad():
        next(reloaded.parameters()).add_(1e-6)
    assert tokenizer_identity(reloaded) != tokenizer_identity(codec)


def test_the_coding_extra_is_optional() -> None:
    """``import vqkit.coding`` works without constriction; coding then names the extra to install."""
    script = (
        "import sys; sys.modules['constriction'] = None\n"
        "import torch, vqkit, vqkit.coding as c\n"
        "p = c.CodePrior.fit(torch.zeros(3, 1, dtype=torch.long), (4,))\n"
        "try:\n    c.encode_codes([torch.zeros(2, 1, dtype=torch.long)], p)\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "entropy coding needs the coding extra: pip install 'vqkit[coding]'" in out.stdout
