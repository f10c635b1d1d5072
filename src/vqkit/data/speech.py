"""``speech``: English sentences from a small seeded grammar, spoken by espeak-ng in several voices.

Clip ``i`` is fixed by ``i`` alone: its sentence, speed (140-185 words per minute) and pitch (30-70) come from
BLAKE2b hashes of ``i`` (no random number generator, so no version of Python or numpy changes them), and its
voice is ``voices[i % len(voices)]``. ``num_clips=64`` is therefore the first 64 clips of ``num_clips=128``.
espeak-ng writes 22,050 Hz mono 16-bit WAV; clips are resampled to ``sample_rate`` and cached
(``vqkit.data.generated``). espeak-ng is a formant synthesizer: the speech is cleaner and more regular than
recorded speech (see docs/data.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vqkit._validate import check_positive_int
from vqkit.data.audio import check_sample_rate, read_audio, segment_length
from vqkit.data.base import DataNotFoundError, VQDataset, cache_root
from vqkit.data.generated import generated_dataset

GRAMMAR_VERSION = 1
DEFAULT_VOICES = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb-scotland",
    "en-us+m3",
    "en-gb-x-rp+f2",
    "en-029",
    "en-us-nyc+f4",
)
INSTALL = "sudo apt-get install --no-install-recommends espeak-ng"

_NOUNS = (
    "cat", "farmer", "river", "teacher", "window", "garden", "pilot", "doctor", "violin", "tiger", "rocket",
    "village", "painter", "kettle", "lantern", "sailor", "mountain", "engine", "student", "baker", "island",
    "camera", "wizard", "bicycle", "captain", "orchard", "market", "compass", "dragon", "owl",
)  # fmt: skip
_PLURALS = (
    "apples", "letters", "candles", "horses", "stones", "boxes", "songs", "shoes", "maps", "keys", "feathers",
    "bottles", "lamps", "coins", "books", "oranges", "umbrellas", "pencils", "clocks", "shells",
)  # fmt: skip
_ADJECTIVES = (
    "quiet", "bright", "heavy", "curious", "ancient", "purple", "gentle", "broken", "tiny", "golden", "frozen",
    "restless", "hollow", "clever", "muddy", "silver", "patient", "crooked", "noisy", "velvet", "distant",
    "brave", "shallow", "careful", "orange", "empty",
)  # fmt: skip
_VERBS = (
    ("paint", "painted"), ("find", "found"), ("carry", "carried"), ("follow", "followed"),
    ("repair", "repaired"), ("open", "opened"), ("watch", "watched"), ("borrow", "borrowed"),
    ("visit", "visited"), ("count", "counted"), ("collect", "collected"), ("describe", "described"),
    ("climb", "climbed"), ("measure", "measured"), ("drop", "dropped"), ("clean", "cleaned"),
    ("notice", "noticed"), ("build", "built"), ("lift", "lifted"), ("hide", "hid"),
)  # fmt: skip
_PLACES = (
    "the station", "the library", "the harbour", "the old bridge", "the market square", "the forest",
    "the kitchen", "the museum", "the hilltop", "the school yard", "the lighthouse", "the garage",
)  # fmt: skip
_TIMES = (
    "this morning", "last winter", "on Tuesday", "after midnight", "before dinner", "in the spring",
    "every evening", "at noon", "yesterday", "three days ago", "on Sunday afternoon", "last year",
)  # fmt: skip
_NAMES = (
    "Anna", "Bruno", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Irene", "Jonas", "Kamala", "Leo",
    "Maya", "Noah", "Olga", "Peter", "Quinn", "Rosa", "Samuel", "Tara",
)  # fmt: skip
_NUMBERS = ("two", "three", "four", "five", "seven", "nine", "eleven", "twelve", "twenty", "forty two")
_ADVERBS = ("slowly", "quickly", "carefully", "loudly", "quietly", "happily", "suddenly", "gently", "again")
_PREPOSITIONS = ("near", "behind", "inside", "across", "under", "beside")
_TEMPLATES = (
    "The {adj} {noun} {past} the {noun2} {prep} {place} {time}.",
    "{name} {past} {num} {adj} {plural} {time}.",
    "Did the {noun} {base} the {adj} {noun2} {adverb}?",
    "Please {base} the {plural} {prep} {place} before {name} arrives.",
    "{Time}, {name} and {name2} {past} {a_adj} {noun} {prep} {place}.",
    "Why is the {noun} so {adj}, {name}?",
    "We {past} {num} {plural} {adverb}, and then the {noun} {past2} them.",
    "{Num} {adj} {plural} were {prep} {place} {time}.",
)


def _hash(i: int, slot: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"vqkit-speech:{i}:{slot}".encode(), digest_size=8).digest(), "big")


def _pick(i: int, slot: str, words: tuple[Any, ...], avoid: Any = None) -> Any:
    k = _hash(i, slot) % len(words)
    return words[(k + 1) % len(words)] if words[k] == avoid else words[k]


def sentence(i: int) -> str:
    """The sentence of clip ``i``."""
    noun, adj, name = _pick(i, "noun", _NOUNS), _pick(i, "adj", _ADJECTIVES), _pick(i, "name", _NAMES)
    base, past = _pick(i, "verb", _VERBS)
    time, num = _pick(i, "time", _TIMES), _pick(i, "num", _NUMBERS)
    slots = {
        "noun": noun,
        "noun2": _pick(i, "noun2", _NOUNS, avoid=noun),
        "plural": _pick(i, "plural", _PLURALS),
        "adj": adj,
        "a_adj": ("an " if adj[0] in "aeiou" else "a ") + adj,
        "base": base,
        "past": past,
        "past2": _pick(i, "verb2", _VERBS, avoid=(base, past))[1],
        "place": _pick(i, "place", _PLACES),
        "time": time,
        "Time": time[0].upper() + time[1:],
        "name": name,
        "name2": _pick(i, "name2", _NAMES, avoid=name),
        "num": num,
        "Num": num[0].upper() + num[1:],
        "adverb": _pick(i, "adverb", _ADVERBS),
        "prep": _pick(i, "prep", _PREPOSITIONS),
    }
    return str(_pick(i, "template", _TEMPLATES)).format(**slots)


def clip_parameters(i: int, voices: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": str(i),
        "text": sentence(i),
        "voice": voices[i % len(voices)],
        "speed": 140 + _hash(i, "speed") % 46,
        "pitch": 30 + _hash(i, "pitch") % 41,
    }


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DataNotFoundError(f"'speech' needs the espeak-ng program, which is not on PATH: {INSTALL}")
    return path


def _describe_espeak() -> dict[str, Any]:
    path = _espeak()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return {
        "program": "espeak-ng",
        "version": match.group(1) if match else out.strip(),
        "command": "espeak-ng -v <voice> -s <speed> -p <pitch> -w <file> <text>",
        "grammar_version": GRAMMAR_VERSION,
    }


def synthesize(unit: dict[str, Any], sample_rate: int) -> np.ndarray:
    """espeak-ng's rendering of one clip, mono float32 at ``sample_rate``."""
    with tempfile.TemporaryDirectory(prefix="vqkit-speech-") as tmp:
        out = Path(tmp) / "clip.wav"
        command = [_espeak(), "-v", unit["voice"], "-s", str(unit["speed"]), "-p", str(unit["pitch"])]
        result = subprocess.run(
            [*command, "-w", str(out), unit["text"]], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0 or not out.is_file():
            message = (result.stderr or result.stdout).strip()
            if "voice does not exist" in message:
                raise ValueError(f"voices: espeak-ng has no voice {unit['voice']!r} (see espeak-ng --voices)")
            raise RuntimeError(f"espeak-ng failed on clip {unit['id']} (exit {result.returncode}): {message}")
        return read_audio(out, sample_rate=sample_rate)


def load_speech(
    split: str,
    *,
    data_dir: str | None,
    seed: int,
    num_clips: int = 256,
    segment_seconds: float = 1.0,
    sample_rate: int = 16000,
    voices: tuple[str, ...] | list[str] = DEFAULT_VOICES,
) -> VQDataset:
    """Generated speech, split by clip (80/10/10, seeded), cut into ``segment_seconds`` segments."""
    check_positive_int("num_clips", num_clips)
    sample_rate = check_sample_rate(sample_rate)
    length = segment_length(segment_seconds, sample_rate)
    if (
        isinstance(voices, str)
        or not isinstance(voices, (list, tuple))
        or not voices
        or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_+-]+", v) for v in voices)
    ):
        raise ValueError(
            f"voices: expected a non-empty list of espeak-ng voice names like 'en-us+f3', got {voices!r}"
        )
    voices = tuple(voices)
    config = {
        "num_clips": num_clips,
        "sample_rate": sample_rate,
        "voices": list(voices),
        "grammar": GRAMMAR_VERSION,
    }
    return generated_dataset(
        "speech",
        split,
        seed,
        cache_root(data_dir),
        config,
        options={
            "num_clips": num_clips,
            "segment_seconds": float(segment_seconds),
            "sample_rate": sample_rate,
            "voices": list(voices),
        },
        sample_rate=sample_rate,
        segment=length,
        unit="clip",
        units=lambda: [clip_parameters(i, voices) for i in range(num_clips)],
        render=lambda unit: synthesize(unit, sample_rate),
        generator=_describe_espeak,
    )
