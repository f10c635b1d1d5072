"""The cache of generated audio (speech, music): clip files, a manifest per configuration, and a lock.

Layout under the cache root (``data_dir``, else ``$VQKIT_CACHE``, else ``~/.cache/vqkit``)::

    <kind>/clips/<key>.wav            one rendered clip, float32 WAV at the dataset's sample rate
    <kind>/manifest-<config key>.json the configuration, the tools' versions, and every clip (id, parameters,
                                      file, sha256, length)
    <kind>/.lock                      held while generating

Every file is written to a temporary name and renamed (``vqkit.utils.atomic``), and the manifest is written
last, so a reader that finds a manifest finds every clip it lists complete. Generation holds an exclusive lock
(``flock``), so two processes (e.g. DDP ranks) starting together generate once: the second waits, then reads.
A clip's key hashes its parameters, the sample rate and the tools' versions, so configurations that share
clips (``num_clips=64`` and ``num_clips=128``) share files. An existing manifest is used as is, without the
tools: the cache is the dataset; delete the folder to regenerate.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vqkit.data.audio import AudioClipsDataset
from vqkit.data.base import CorruptDataError, permutation_split, require_nonempty
from vqkit.utils.atomic import atomic_write_bytes, atomic_write_text

FORMAT = 1


def config_key(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); no lock where ``fcntl`` is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep readers safe, generation may run twice
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _decode_wav(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    except (RuntimeError, OSError, ValueError) as error:
        raise CorruptDataError(
            f"{path}: cannot read the cached clip ({error}); delete it to regenerate"
        ) from error
    return audio, int(rate)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorruptDataError(
            f"{path}: cannot read the manifest ({error}); delete it to regenerate"
        ) from error
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("units"), list):
        raise CorruptDataError(f"{path}: not a format-{FORMAT} vqkit manifest; delete it to regenerate")
    return manifest


def _complete(folder: Path, manifest: dict[str, Any] | None) -> bool:
    return manifest is not None and all((folder / unit["file"]).is_file() for unit in manifest["units"])


def ensure_generated(
    kind: str,
    root: Path,
    config: dict[str, Any],
    *,
    sample_rate: int,
    units: Callable[[], list[dict[str, Any]]],
    render: Callable[[dict[str, Any]], np.ndarray],
    generator: Callable[[], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """The manifest (path, content) of ``config``, generating what is missing.

    ``units()`` lists the clips (JSON-able dicts, each with a unique ``"id"``); ``render(unit)`` returns one as
    mono float32 at ``sample_rate``; ``generator()`` checks the tools and describes them (their versions go
    into the clip keys). The last two are called only when something must be generated.
    """
    folder = root / kind
    manifest_path = folder / f"manifest-{config_key({'format': FORMAT, 'kind': kind, **config})}.json"
    manifest = _read_manifest(manifest_path)
    if _complete(folder, manifest):
        assert manifest is not None
        return manifest_path, manifest
    with exclusive_lock(folder / ".lock"):
        manifest = _read_manifest(manifest_path)  # another process may have finished while we waited
        if _complete(folder, manifest):
            assert manifest is not None
            return manifest_path, manifest
        tools = generator()
        entries = []
        for unit in units():
            key = config_key(
                {"format": FORMAT, "kind": kind, "unit": unit, "sr": sample_rate, "tools": tools}
            )
            path = folder / "clips" / f"{key}.wav"
            if path.is_file():  # shared with another configuration; complete, since it was renamed into place
                data = path.read_bytes()
                num_samples = len(_decode_wav(data, path)[0])
            else:
                audio = np.clip(np.asarray(render(unit), dtype=np.float32), -1.0, 1.0)
                data = encode_wav(audio, sample_rate)
                atomic_write_bytes(path, data)
                num_samples = len(audio)
            sha = hashlib.sha256(data).hexdigest()
            entries.append({**unit, "file": f"clips/{key}.wav", "sha256": sha, "num_samples": num_samples})
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "config": config,
            "sample_rate": sample_rate,
            "generator": tools,
            "units": entries,
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest_path, manifest


def read_clip(folder: Path, entry: dict[str, Any], sample_rate: int) -> np.ndarray:
    """One clip listed in a manifest, checked against its sha256, length and sample rate."""
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptDataError(
            f"{path}: cannot read the cached clip ({error}); delete the manifest"
        ) from error
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptDataError(f"{path}: content differs from its manifest's sha256; delete it to regenerate")
    audio, rate = _decode_wav(data, path)
    if rate != sample_rate or audio.ndim != 1 or len(audio) != entry["num_samples"]:
        raise CorruptDataError(
            f"{path}: expected {entry['num_samples']} mono samples at {sample_rate} Hz as the manifest lists, "
            f"got shape {list(audio.shape)} at {rate} Hz; delete it to regenerate"
        )
    return audio


def generated_dataset(
    name: str,
    split: str,
    seed: int,
    root: Path,
    config: dict[str, Any],
    *,
    options: dict[str, Any],
    sample_rate: int,
    segment: int,
    unit: str,
    units: Callable[[], list[dict[str, Any]]],
    render: Callable[[dict[str, Any]], np.ndarray],
    generator: Callable[[], dict[str, Any]],
) -> AudioClipsDataset:
    """Generate (or reuse) the clips of ``config``, split them by clip with a seeded permutation, segment them.

    ``config`` holds what the clips depend on (the manifest's key); ``options`` all options, for ``info()``.
    """
    manifest_path, manifest = ensure_generated(
        name, root, config, sample_rate=sample_rate, units=units, render=render, generator=generator
    )
    entries = manifest["units"]
    indices, rule = permutation_split([str(e["id"]) for e in entries], split, seed, unit=unit)
    require_nonempty(name, split, indices, f"{len(entries)} {unit}s")
    clips = [read_clip(manifest_path.parent, entries[i], sample_rate) for i in indices]
    record = {
        "name": name,
        "split": split,
        "sources": [str(manifest_path)],
        "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        "generator": manifest["generator"],
        "num_source_clips": len(entries),
        "split_ids": [entries[i]["id"] for i in indices],
        "split_rule": rule,
        "seed": seed,
        "segment_rule": "full segments, plus a zero-padded tail if it is at least half a segment",
        "options": options,
    }
    return AudioClipsDataset(clips, sample_rate=sample_rate, length=segment, record=record)
