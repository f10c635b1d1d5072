"""``music``: pieces of music21's bundled corpus, written to MIDI by music21 and rendered by fluidsynth.

The default selection is the first ``num_pieces`` of music21's 371 Bach chorales in Riemenschneider order;
``pieces`` names works (``"bach/bwv66.6"``) or score files instead. Piece ``k`` is played by the General MIDI
program ``programs[k % len(programs)]`` on every part, rendered by fluidsynth with a soundfont (Debian's
TimGM6mb by default) at ``sample_rate`` (or at 44.1 kHz and resampled, outside fluidsynth's 8-96 kHz), mixed
down to mono and peak-normalized to 0.9 (fluidsynth's level depends on the instrument and the number of voices).
Clips are cached (``vqkit.data.generated``). The corpus licence forbids some commercial uses: do not
redistribute the rendered audio.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vqkit._validate import check_positive_int, is_int
from vqkit.data.audio import check_sample_rate, read_audio, resample, segment_length
from vqkit.data.base import DataNotFoundError, VQDataset, cache_root, sha256_file
from vqkit.data.generated import generated_dataset

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
# Acoustic grand piano, harpsichord, church organ, nylon guitar, string ensemble, choir aahs, oboe, flute.
DEFAULT_PROGRAMS = (0, 6, 19, 24, 48, 52, 68, 73)
NUM_CHORALES = 371
PEAK = 0.9
INSTALL = "sudo apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont"
_SCORE_EXTENSIONS = (".mxl", ".musicxml", ".xml", ".krn", ".abc", ".mid", ".midi")


def _corpus_dir() -> Path:
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError("'music' needs music21 and its bundled corpus: pip install 'vqkit[audio]'")
    return Path(next(iter(spec.submodule_search_locations))) / "corpus"


def resolve_piece(piece: str) -> Path:
    """A score file: ``piece`` itself if it is a file, else the corpus work of that name (``bach/bwv66.6``)."""
    path = Path(piece).expanduser()
    if path.suffix.lower() in _SCORE_EXTENSIONS and path.is_file():
        return path
    corpus = _corpus_dir()
    for extension in _SCORE_EXTENSIONS:  # exact names: music21's getWork also matches prefixes (bwv245.3*)
        candidate = corpus / f"{piece}{extension}"
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"pieces: {piece!r} is neither a score file nor a music21 corpus work (e.g. 'bach/bwv66.6')"
    )


def chorales(count: int) -> list[str]:
    """The first ``count`` Bach chorales of music21's corpus, Riemenschneider order."""
    from music21 import corpus

    return list(corpus.chorales.Iterator(returnType="filename"))[:count]


def _fluidsynth() -> str:
    path = shutil.which("fluidsynth")
    if path is None:
        raise DataNotFoundError(f"'music' needs the fluidsynth program, which is not on PATH: {INSTALL}")
    return path


def _describe_tools(soundfont: Path) -> dict[str, Any]:
    fluidsynth = _fluidsynth()
    if not soundfont.is_file():
        raise DataNotFoundError(
            f"soundfont: {str(soundfont)!r} is missing: {INSTALL}, or pass soundfont=<.sf2 file>"
        )
    try:
        import music21
    except ImportError as error:
        raise DataNotFoundError("'music' needs music21: pip install 'vqkit[audio]'") from error
    out = subprocess.run(
        [fluidsynth, "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    match = re.search(r"runtime version\s*(\S+)", out)
    return {
        "program": "fluidsynth",
        "version": match.group(1) if match else out.strip().splitlines()[0] if out.strip() else "unknown",
        "music21": str(music21.__version__),
        "soundfont": str(soundfont),
        "soundfont_sha256": sha256_file(soundfont),
        "command": "fluidsynth -ni -q -O float -r <rate> -F <wav> <soundfont> <midi>",
        "peak": PEAK,
    }


def midi_bytes(score_path: Path, program: int) -> bytes:
    """The score as a standard MIDI file, every part played by General MIDI ``program``."""
    from music21 import converter, instrument, stream
    from music21.midi import translate

    score = converter.parse(score_path, forceSource=True)  # forceSource: no pickled cache is read or written
    if isinstance(score, stream.Opus):
        raise ValueError(f"pieces: {str(score_path)!r} holds {len(score.scores)} works; name one score file")
    for part in score.parts if isinstance(score, stream.Score) else [score]:
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            site = old.activeSite
            if site is not None:
                site.remove(old)
        player = instrument.Instrument()
        player.midiProgram = program
        part.insert(0, player)
    data: bytes = translate.music21ObjectToMidiFile(score).writestr()
    return data


def render(unit: dict[str, Any], sample_rate: int, soundfont: Path) -> np.ndarray:
    """One piece rendered: mono float32 at ``sample_rate``, peak ``PEAK``."""
    data = midi_bytes(resolve_piece(unit["piece"]), unit["program"])
    rate = sample_rate if 8000 <= sample_rate <= 96000 else 44100
    with tempfile.TemporaryDirectory(prefix="vqkit-music-") as tmp:
        midi, wav = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        midi.write_bytes(data)
        command = [_fluidsynth(), "-ni", "-q", "-O", "float", "-r", str(rate), "-F", str(wav), str(soundfont)]
        result = subprocess.run(
            [*command, str(midi)], capture_output=True, text=True, timeout=600, check=False
        )
        if result.returncode != 0 or not wav.is_file():
            message = (result.stderr or result.stdout).strip()
            raise RuntimeError(
                f"fluidsynth failed on {unit['piece']!r} (exit {result.returncode}): {message}"
            )
        audio = resample(read_audio(wav), rate, sample_rate)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * (PEAK / peak) if peak > 0 else audio


def load_music(
    split: str,
    *,
    data_dir: str | None,
    seed: int,
    num_pieces: int = 16,
    segment_seconds: float = 1.0,
    sample_rate: int = 16000,
    pieces: list[str] | tuple[str, ...] | None = None,
    programs: list[int] | tuple[int, ...] = DEFAULT_PROGRAMS,
    soundfont: str | None = None,
) -> VQDataset:
    """Rendered music, split by piece (80/10/10, seeded), cut into ``segment_seconds`` segments."""
    chosen = _check_pieces(pieces, num_pieces)
    sample_rate = check_sample_rate(sample_rate)
    length = segment_length(segment_seconds, sample_rate)
    programs = _check_programs(programs)
    if soundfont is not None and not isinstance(soundfont, str):
        raise ValueError(f"soundfont: expected the path of an .sf2 file, got {soundfont!r}")
    font = Path(soundfont or DEFAULT_SOUNDFONT).expanduser()
    # What the clips depend on (the cache key); ``options`` adds what only cuts them into segments.
    config = {
        "num_pieces": None if chosen else num_pieces,
        "pieces": chosen,
        "programs": programs,
        "sample_rate": sample_rate,
        "soundfont": str(font),
    }
    options = {
        **config,
        "num_pieces": len(chosen) if chosen else num_pieces,
        "segment_seconds": float(segment_seconds),
    }
    return generated_dataset(
        "music",
        split,
        seed,
        cache_root(data_dir),
        config,
        options=options,
        sample_rate=sample_rate,
        segment=length,
        unit="piece",
        units=lambda: music_units(chosen if chosen is not None else chorales(num_pieces), programs),
        render=lambda unit: render(unit, sample_rate, font),
        generator=lambda: _describe_tools(font),
    )


def _check_pieces(pieces: Any, num_pieces: Any) -> list[str] | None:
    """``pieces`` as a list (None: the first ``num_pieces`` chorales, which must exist)."""
    check_positive_int("num_pieces", num_pieces)
    if pieces is None:
        if num_pieces > NUM_CHORALES:
            raise ValueError(
                f"num_pieces: expected at most {NUM_CHORALES} (the corpus' Bach chorales), got {num_pieces}"
            )
        return None
    if (
        isinstance(pieces, str)
        or not isinstance(pieces, (list, tuple))
        or not pieces
        or not all(isinstance(p, str) and p for p in pieces)
        or len(set(pieces)) != len(pieces)
    ):
        raise ValueError(
            f"pieces: expected a non-empty list of distinct corpus names or score files, got {pieces!r}"
        )
    return list(pieces)


def _check_programs(programs: Any) -> list[int]:
    """``programs`` as a list of General MIDI programs (0..127)."""
    if (
        isinstance(programs, str)
        or not isinstance(programs, (list, tuple))
        or not programs
        or not all(is_int(p) and 0 <= p <= 127 for p in programs)
    ):
        raise ValueError(
            f"programs: expected a non-empty list of General MIDI programs in 0..127, got {programs!r}"
        )
    return list(programs)


def music_units(names: list[str], programs: list[int]) -> list[dict[str, Any]]:
    """One unit per piece: its name, the program that plays it (``programs`` in turn), and its score's hash
    (an edited score file is another clip)."""
    out = []
    for k, name in enumerate(names):
        source = resolve_piece(name)
        out.append(
            {
                "id": name,
                "piece": name,
                "program": programs[k % len(programs)],
                "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            }
        )
    return out
