"""Audio datasets: fixed-length mono segments of clips (generated or read from a folder), and the shared audio ops.

Segments: a clip of ``n`` samples gives ``n // L`` full segments of ``L = round(segment_seconds * sample_rate)``
samples; a remaining tail of at least ``L / 2`` samples, or a clip shorter than one segment, gives one more,
zero-padded at the end. Resampling is ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed FIR with
beta 5, scipy's default). Values are clipped to [-1, 1].
"""

from __future__ import annotations

import math
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit._validate import check_int, is_number
from vqkit.data.base import CorruptDataError, VQDataset, split_folder_files
from vqkit.data.base import require_nonempty as _require_nonempty

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# libsndfile's MP3 seeking is not sample-exact (the bit reservoir): MP3 files are decoded from their start.
_DECODE_FROM_START = (".mp3",)
_STREAMED = 0x7FFF0000  # WAV data sizes from here up are placeholders of writers that could not seek back


def check_sample_rate(sample_rate: Any) -> int:
    return check_int(
        "sample_rate",
        sample_rate,
        minimum=1000,
        maximum=384_000,
        expected="an integer number of Hz in [1000, 384000]",
    )


def segment_length(segment_seconds: Any, sample_rate: int) -> int:
    if (
        not is_number(segment_seconds)
        or not 0 < float(segment_seconds) <= 3600
        or round(float(segment_seconds) * sample_rate) < 1
    ):
        raise ValueError(
            f"segment_seconds: expected a number of seconds in (0, 3600] that spans at least one sample at "
            f"{sample_rate} Hz, got {segment_seconds!r}"
        )
    return round(float(segment_seconds) * sample_rate)


def segment_starts(num_samples: int, length: int) -> list[int]:
    """Start offsets of the fixed-length segments of a clip (see the module docstring for the rule)."""
    full, tail = divmod(num_samples, length)
    extra = 1 if tail and (2 * tail >= length or full == 0) else 0
    return [k * length for k in range(full + extra)]


def _ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    g = math.gcd(from_rate, to_rate)
    return to_rate // g, from_rate // g


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """resample_poly's default filter, designed once per rate pair instead of once per call."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return np.asarray(firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)), dtype=np.float64)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """1-D ``x`` at ``from_rate`` to ``to_rate`` (float32, ``ceil(len(x) * to_rate / from_rate)`` samples)."""
    if from_rate == to_rate:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    up, down = _ratio(from_rate, to_rate)
    y = resample_poly(np.asarray(x, dtype=np.float64), up, down, window=_lowpass(up, down))
    return np.asarray(y, dtype=np.float32)


def resampled_length(num_samples: int, from_rate: int, to_rate: int) -> int:
    up, down = _ratio(from_rate, to_rate)
    return -(-num_samples * up // down)


def to_mono(data: np.ndarray) -> np.ndarray:
    """``[T]`` or ``[T, channels]`` to ``[T]`` float32: the mean of the channels."""
    return np.asarray(data.mean(axis=1) if data.ndim == 2 else data, dtype=np.float32)


def audio_info(path: Path) -> tuple[int, int]:
    """``(frames, sample_rate)`` of an audio file, or ``CorruptDataError`` naming it."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise CorruptDataError(f"{path}: cannot read the audio file ({error})") from error
    check_wav_complete(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise CorruptDataError(f"{path}: audio file has {info.frames} frames at {info.samplerate} Hz")
    return int(info.frames), int(info.samplerate)


def read_audio(
    path: Path, start: int = 0, stop: int | None = None, *, sample_rate: int | None = None
) -> np.ndarray:
    """Frames ``[start, stop)`` (at the file's own rate) of an audio file, mixed down to mono float32, and
    ``resample``-d to ``sample_rate`` when it is given.

    The one audio reader of vqkit (the audio datasets and ``vqkit encode`` both use it). A file soundfile cannot
    decode is a ``CorruptDataError`` naming it and the decoder's complaint.
    """
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise CorruptDataError(f"{path}: cannot read the audio file ({error})") from error
    check_wav_complete(path)
    if start == 0 and stop is None and data.shape[0] == 0:  # e.g. a truncated Ogg file: no frame decodes
        raise CorruptDataError(f"{path}: the audio file holds no frames")
    mono = to_mono(data)
    return mono if sample_rate is None else resample(mono, int(rate), sample_rate)


def check_wav_complete(path: Path) -> None:
    """``CorruptDataError`` when ``path`` is a RIFF WAVE file whose ``data`` chunk runs past the end of the
    file: libsndfile reads the frames that are there and says nothing, so a truncated file would pass for a
    shorter recording. A size of 0 or of about 2 GiB or more is a streamed file's placeholder (its length was
    never written: ``espeak-ng --stdout`` writes 0x7FFFF000) and is accepted."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return  # not RIFF WAVE (FLAC, Ogg, RF64, ...): libsndfile's own checks apply
        size, offset = os.fstat(handle.fileno()).st_size, 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk, length = struct.unpack("<4sI", handle.read(8))
            if chunk == b"data":
                held = size - offset - 8
                if 0 < length < _STREAMED and length > held:
                    raise CorruptDataError(
                        f"{path}: truncated WAV file: its header declares {length} bytes of audio, the file "
                        f"holds {held}"
                    )
                return
            offset += 8 + length + (length & 1)  # chunks are padded to an even size


def _read_span(path: Path, start: int, stop: int) -> np.ndarray:
    if path.suffix.lower() in _DECODE_FROM_START:
        return read_audio(path, 0, stop)[start:]
    return read_audio(path, start, stop)


def _finish(segment: np.ndarray, length: int) -> torch.Tensor:
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(segment))] = segment[:length]
    return torch.from_numpy(np.clip(out, -1.0, 1.0, out=out))[None]


class _SegmentDataset(VQDataset):
    """Segments of ``length`` samples of several mono sources: the table of ``(source, start)`` pairs (from
    ``segment_starts`` of each source's ``num_samples`` at ``sample_rate``) and the dataset contract, shared by
    clips in memory and files on disk, which differ only in how ``_item`` reads a segment."""

    def __init__(
        self, num_samples: list[int], *, sample_rate: int, length: int, record: dict[str, Any]
    ) -> None:
        table = [(k, s) for k, n in enumerate(num_samples) for s in segment_starts(n, length)]
        super().__init__(
            modality="audio",
            item_shape=(1, length),
            length=len(table),
            record=record,
            sample_rate=sample_rate,
        )
        self._table = np.array(table, dtype=np.int64).reshape(-1, 2)
        self._segment = length

    def _source_start(self, i: int) -> tuple[int, int]:
        """``(source index, start sample)`` of segment ``i``."""
        source, start = (int(v) for v in self._table[i])
        return source, start


class AudioClipsDataset(_SegmentDataset):
    """Segments of clips held in memory, already at ``sample_rate``."""

    def __init__(
        self, clips: list[np.ndarray], *, sample_rate: int, length: int, record: dict[str, Any]
    ) -> None:
        lengths = [len(clip) for clip in clips]
        super().__init__(lengths, sample_rate=sample_rate, length=length, record=record)
        self._clips = clips

    def _item(self, i: int) -> torch.Tensor:
        clip, start = self._source_start(i)
        return _finish(self._clips[clip][start : start + self._segment], self._segment)


class AudioFolderDataset(_SegmentDataset):
    """Segments read from the files on each access; only the frames a segment needs (plus the resampling
    filter's reach) are read, so long files and large folders cost no memory. A segment equals the same span
    of the whole file resampled at once, up to float rounding."""

    def __init__(
        self, files: list[tuple[Path, int, int]], *, sample_rate: int, length: int, record: dict[str, Any]
    ) -> None:
        lengths = [resampled_length(frames, rate, sample_rate) for _, frames, rate in files]
        super().__init__(lengths, sample_rate=sample_rate, length=length, record=record)
        self._files = files

    def _item(self, i: int) -> torch.Tensor:
        index, start = self._source_start(i)
        path, frames, rate = self._files[index]
        length, target = self._segment, int(self.sample_rate or rate)
        if rate == target:
            return _finish(_read_span(path, start, min(frames, start + length)), length)
        up, down = _ratio(rate, target)
        # Output sample n sits at input position n * down / up, so input block m * down starts output m * up
        # exactly. Widen the read by the filter's reach (10 * max(up, down) taps of the upsampled signal).
        reach = -(-10 * max(up, down) // down) + 2
        first = max(0, (start - reach) // up)
        last = -(-(start + length + reach) // up)
        chunk = _read_span(path, first * down, min(frames, last * down))
        offset = start - first * up
        return _finish(resample(chunk, rate, target)[offset : offset + length], length)


def load_audio_folder(
    split: str, *, data_dir: str | None, seed: int, segment_seconds: float = 1.0, sample_rate: int = 16000
) -> VQDataset:
    """Every audio file under ``data_dir`` (recursive, sorted), a seeded 80/10/10 split of the files."""
    sample_rate = check_sample_rate(sample_rate)
    length = segment_length(segment_seconds, sample_rate)
    root, paths, indices, rule = split_folder_files(
        data_dir, "audio_folder", "audio files", extensions=AUDIO_EXTENSIONS, split=split, seed=seed
    )
    _require_nonempty("audio_folder", split, indices, f"{len(paths)} files under {root}")
    files = [(paths[i], *audio_info(paths[i])) for i in indices]
    record = {
        "name": "audio_folder",
        "split": split,
        "sources": [str(root)],
        "num_source_files": len(paths),
        "num_split_files": len(files),
        "split_rule": rule,
        "seed": seed,
        "segment_rule": "full segments, plus a zero-padded tail if it is at least half a segment",
        "options": {"segment_seconds": float(segment_seconds), "sample_rate": sample_rate},
    }
    return AudioFolderDataset(files, sample_rate=sample_rate, length=length, record=record)
