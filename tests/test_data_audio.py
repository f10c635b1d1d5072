"""vqkit.data audio: segments, audio folders, generated speech (espeak-ng) and music (music21 + fluidsynth)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vqkit.data.speech as speech
from vqkit.data import CorruptDataError, DataNotFoundError, load_dataset
from vqkit.data.audio import segment_starts
from vqkit.data.generated import exclusive_lock

sf = pytest.importorskip("soundfile", reason="the train extra (soundfile, scipy) is not installed")
resample_poly = pytest.importorskip("scipy.signal").resample_poly

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None
    or not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file()
    or importlib.util.find_spec("music21") is None,
    reason="fluidsynth, the TimGM6mb soundfont or music21 is not installed",
)


def test_segment_rule() -> None:
    assert segment_starts(1000, 400) == [0, 400, 800]  # tail 200 = half a segment: kept, padded
    assert segment_starts(999, 400) == [0, 400]  # tail 199 < 200: dropped
    assert segment_starts(1001, 500) == [0, 500]  # tail 1: dropped
    assert segment_starts(100, 400) == [0]  # shorter than a segment: one padded segment
    assert segment_starts(0, 400) == []


def _tone(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono, -0.5 * mono], axis=1) if channels == 2 else mono


def test_audio_folder_mono_resampling_and_segments(tmp_path: Path) -> None:
    stereo = _tone(1.3, 22050, 440.0, channels=2)
    (tmp_path / "deep").mkdir()
    sf.write(tmp_path / "deep" / "x.wav", stereo, 22050, subtype="FLOAT")
    ds = load_dataset("audio_folder", "train", data_dir=tmp_path, segment_seconds=0.5, sample_rate=16000)
    assert ds.modality == "audio" and ds.sample_rate == 16000 and ds.item_shape == (1, 8000)
    mono = resample_poly(stereo.mean(axis=1), 320, 441)  # 22050 -> 16000 of the channel mean
    assert len(mono) == 20800 and len(ds) == 3  # 2 full segments and a 4,800-sample tail (>= half): padded
    items = torch.cat([ds[i] for i in range(len(ds))], dim=1)[0].numpy()
    np.testing.assert_allclose(items[:20800], mono, atol=1e-5)
    assert not items[20800:].any()
    assert ds.info()["options"] == {"segment_seconds": 0.5, "sample_rate": 16000}


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile cannot write MP3")
def test_audio_folder_mp3_segments_match_a_full_decode(tmp_path: Path) -> None:
    # A pure tone leans on the MP3 bit reservoir, where libsndfile's seeking is not sample-exact.
    sf.write(tmp_path / "tone.mp3", _tone(3.0, 16000, 440.0).astype(np.float32), 16000, format="MP3")
    full, _ = sf.read(tmp_path / "tone.mp3", dtype="float32")
    ds = load_dataset("audio_folder", "train", data_dir=tmp_path, segment_seconds=0.25)
    items = torch.cat([ds[i] for i in range(len(ds))], dim=1)[0].numpy()
    np.testing.assert_array_equal(items[: len(full)], full[: len(items)])


def test_audio_folder_flac_recursive_and_splits(tmp_path: Path) -> None:
    for i in range(10):  # LibriSpeech-like layout: speaker/chapter/utterance.flac
        folder = tmp_path / f"{i % 2}" / f"{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"utt{i}.flac", _tone(0.25 + 0.05 * i, 16000, 200.0 + 50 * i), 16000)
    (tmp_path / "README.txt").write_text("not audio")
    counts = {}
    for split in ("train", "val", "test"):
        ds = load_dataset("audio_folder", split, data_dir=tmp_path, segment_seconds=0.2)
        counts[split] = ds.info()["num_split_files"]
        assert all(float(ds[i].abs().max()) > 0.1 for i in range(len(ds)))
    assert counts == {"train": 8, "val": 1, "test": 1}
    low = load_dataset("audio_folder", "val", data_dir=tmp_path, segment_seconds=0.2, sample_rate=8000)
    assert low[0].shape == (1, 1600)


def test_audio_folder_corrupt_file_is_named(tmp_path: Path) -> None:
    sf.write(tmp_path / "good.wav", _tone(0.5, 16000, 300.0), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + b"\x00" * 30)
    with pytest.raises(CorruptDataError, match=rf"{tmp_path / 'bad.wav'}: cannot read the audio file"):
        load_dataset("audio_folder", "train", data_dir=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="found no audio files"):
        load_dataset("audio_folder", "train", data_dir=empty)


@needs_espeak
def test_speech_generation_determinism_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = speech.synthesize

    def counting(unit: dict[str, object], sample_rate: int) -> np.ndarray:
        calls.append(str(unit["id"]))
        return real(unit, sample_rate)

    monkeypatch.setattr(speech, "synthesize", counting)
    options = {"num_clips": 3, "segment_seconds": 0.5, "sample_rate": 16000}
    a = load_dataset("speech", "train", data_dir=tmp_path / "a", **options)
    assert calls == ["0", "1", "2"]
    assert a.item_shape == (1, 8000) and a.sample_rate == 16000 and len(a) >= 2
    x = a[0]
    assert x.dtype == torch.float32 and float(x.abs().max()) > 0.05 and float(x.abs().max()) <= 1.0
    # cached: nothing is rendered again, and the other splits come from the same manifest
    b = load_dataset("speech", "train", data_dir=tmp_path / "a", **options)
    val = load_dataset("speech", "val", data_dir=tmp_path / "a", **options)
    assert calls == ["0", "1", "2"] and torch.equal(a[1], b[1])
    assert not set(a.info()["split_ids"]) & set(val.info()["split_ids"])
    # a larger corpus shares the first clips' files: only the new clip is rendered
    load_dataset("speech", "test", data_dir=tmp_path / "a", **{**options, "num_clips": 4})
    assert calls == ["0", "1", "2", "3"]
    # generated again from scratch elsewhere: identical audio
    c = load_dataset("speech", "train", data_dir=tmp_path / "c", **options)
    assert all(torch.equal(a[i], c[i]) for i in range(len(a)))
    info = json.loads(json.dumps(a.info()))
    manifest = json.loads(Path(info["sources"][0]).read_text())
    assert info["generator"]["program"] == "espeak-ng" and manifest["generator"] == info["generator"]
    assert [u["voice"] for u in manifest["units"]] == ["en-us", "en-gb", "en-us+f3"]
    assert all(u["text"].endswith((".", "?")) for u in manifest["units"])
    assert not list((tmp_path / "a" / "speech").rglob("*.tmp"))


@needs_espeak
def test_speech_cache_works_without_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"num_clips": 3, "segment_seconds": 0.25}
    cached = load_dataset("speech", "test", data_dir=tmp_path, **options)
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert torch.equal(load_dataset("speech", "test", data_dir=tmp_path, **options)[0], cached[0])
    with pytest.raises(DataNotFoundError, match="apt-get install --no-install-recommends espeak-ng"):
        load_dataset("speech", "test", data_dir=tmp_path, num_clips=4)


@needs_espeak
def test_speech_bad_voice_and_tampered_cache(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="voices: espeak-ng has no voice 'xx-nowhere'"):
        load_dataset("speech", "train", data_dir=tmp_path, num_clips=1, voices=["xx-nowhere"])
    ds = load_dataset("speech", "train", data_dir=tmp_path, num_clips=1)
    clip = next((tmp_path / "speech" / "clips").glob("*.wav"))
    clip.write_bytes(clip.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match=rf"{clip}: content differs from its manifest"):
        load_dataset("speech", "train", data_dir=tmp_path, num_clips=1)
    clip.unlink()  # deleting it regenerates it
    assert torch.equal(load_dataset("speech", "train", data_dir=tmp_path, num_clips=1)[0], ds[0])


def _rank(cache: str, ready: str, result: str) -> None:
    """One "DDP rank": count the clips it renders itself, load the train split, report."""
    calls: list[str] = []
    real = speech.synthesize
    speech.synthesize = lambda unit, rate: calls.append(unit["id"]) or real(unit, rate)  # type: ignore[assignment]
    Path(ready).touch()
    ds = load_dataset("speech", "train", data_dir=cache, num_clips=4, segment_seconds=0.5)
    total = float(sum(np.abs(ds[i].numpy()).sum() for i in range(len(ds))))  # numpy only: no torch threads
    Path(result).write_text(json.dumps({"rendered": len(calls), "total": total}))


@needs_espeak
def test_speech_two_processes_share_one_generation(tmp_path: Path) -> None:
    # Hold the generation lock while both start, so that they queue on it as two DDP ranks would. Forked
    # children start at once (no second torch import); they run only numpy, soundfile and espeak-ng.
    context = multiprocessing.get_context("fork")
    with exclusive_lock(tmp_path / "speech" / ".lock"):
        ranks = [
            context.Process(
                target=_rank, args=(str(tmp_path), str(tmp_path / f"ready{k}"), str(tmp_path / f"{k}.json"))
            )
            for k in range(2)
        ]
        for rank in ranks:
            rank.start()
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready{k}").exists() for k in range(2)) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    for rank in ranks:
        rank.join(timeout=120)
    assert [rank.exitcode for rank in ranks] == [0, 0]
    results = [json.loads((tmp_path / f"{k}.json").read_text()) for k in range(2)]
    assert sorted(r["rendered"] for r in results) == [
        0,
        4,
    ]  # one rank rendered all four clips, the other none
    assert results[0]["total"] == results[1]["total"] > 0
    assert len(list((tmp_path / "speech" / "clips").iterdir())) == 4
    assert not list((tmp_path / "speech").rglob("*.tmp"))


@needs_fluidsynth
def test_music_renders_a_chorale(tmp_path: Path) -> None:
    from vqkit.data.music import render

    ds = load_dataset(
        "music", "train", data_dir=tmp_path, pieces=["bach/bwv66.6"], programs=[19], sample_rate=8000
    )
    assert ds.sample_rate == 8000 and ds.item_shape == (1, 8000)
    assert 20 <= len(ds) <= 30  # about 25 s of music in 1 s segments
    audio = torch.cat([ds[i] for i in range(len(ds))], dim=1)
    assert abs(float(audio.abs().max()) - 0.9) < 1e-4  # peak-normalized
    assert float(audio.pow(2).mean().sqrt()) > 0.05
    info = ds.info()
    assert info["generator"]["program"] == "fluidsynth" and info["split_ids"] == ["bach/bwv66.6"]
    assert info["options"]["programs"] == [19] and info["options"]["num_pieces"] == 1
    unit = {"id": "bach/bwv66.6", "piece": "bach/bwv66.6", "program": 19}
    again = render(unit, 8000, Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))
    n = min(audio.shape[1], len(again))
    np.testing.assert_array_equal(audio[0, :n].numpy(), again[:n])
    with pytest.raises(ValueError, match="pieces: 'bach/no-such-work' is neither a score file nor"):
        load_dataset("music", "train", data_dir=tmp_path, pieces=["bach/no-such-work"])


def test_music_missing_tool_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    with pytest.raises(
        DataNotFoundError, match="apt-get install --no-install-recommends fluidsynth timgm6mb"
    ):
        load_dataset("music", "train", data_dir=tmp_path, pieces=["bach/bwv66.6"])
