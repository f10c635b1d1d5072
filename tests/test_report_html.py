"""``report.html`` and the report pictures: the markdown as one self-contained page (pictures and WAVs as data
URIs), the bench's and eval's pictures, and the page loaded in a real headless browser (Debian's chromium),
where every picture must decode and every audio player must hold a decodable WAV."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
import torch

from vqkit.cli import main
from vqkit.train.files import audio_bytes, image_bytes
from vqkit.train.report_html import write_html_report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium, or `make system` as root)"
)
SOURCES = re.compile(r'\b(?:src|href)="([^"]*)"')

# Written into a copy of the page: once it has loaded, the counts of pictures that decoded (naturalWidth > 0),
# of audio players whose WAV the browser's own decoder reads, and of players that loaded it themselves (their
# duration is known), as an attribute of <body> for --dump-dom.
PROBE = """<script>
window.addEventListener("load", async () => {
  const images = [...document.images];
  const players = [...document.querySelectorAll("audio")];
  const context = new OfflineAudioContext(1, 1, 8000);
  const decoded = await Promise.all(players.map(async (player) => {
    try {
      const bytes = Uint8Array.from(atob(player.src.split(",")[1]), (c) => c.charCodeAt(0));
      return (await context.decodeAudioData(bytes.buffer)).duration > 0 ? 1 : 0;
    } catch (error) {
      return 0;
    }
  }));
  document.body.dataset.probe = JSON.stringify({
    images: images.length,
    loaded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    audio: players.length,
    decoded: decoded.reduce((a, b) => a + b, 0),
    ready: players.filter((p) => p.readyState >= 1 && p.duration > 0).length,
  });
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def browser_counts(page: Path, tmp_path: Path) -> dict[str, int]:
    """What the page's pictures and players amount to once chromium has loaded it (see ``PROBE``)."""
    probed = tmp_path / f"probe-{page.parent.name}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(
        "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), profile=tmp_path / "chromium"
    )
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found is not None, dom.stdout[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


def screenshot(page: Path, out: Path, size: str = "1300,1800") -> tuple[int, int]:
    """A PNG of the page as chromium draws it; returns its width and height."""
    _chromium(
        "--hide-scrollbars",
        f"--window-size={size}",
        f"--screenshot={out}",
        page.as_uri(),
        profile=out.parent / "chromium",
    )
    head = out.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def embedded(page: str, kind: str) -> list[bytes]:
    prefix = f"data:{kind};base64,"
    return [base64.b64decode(s[len(prefix) :]) for s in SOURCES.findall(page) if s.startswith(prefix)]


def test_markdown_becomes_one_self_contained_page(tmp_path: Path) -> None:
    png = image_bytes(torch.rand(1, 12, 20))
    wav = audio_bytes(torch.sin(torch.arange(800) / 5.0) * 0.5, 8000)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(png)
    (tmp_path / "clip.wav").write_bytes(wav)
    (tmp_path / "report.md").write_text(
        "# Bench: `x <y>`\n\nSome text with `code` & more.\n\n| method | psnr |\n|---|---|\n| vq | 21.5 ± 0.2 |\n"
        "| fsq | – |\n\nNot run:\n\n* lfq: cannot reach 3 bits\n\n## Rate-distortion: psnr\n\n![psnr](plots/a.png)\n\n"
        "## Missing\n\n![gone](plots/gone.png)\n\n## Audio\n\n| | clip 1 |\n|---|---|\n| vq | [c](clip.wav) |\n\n"
        "```yaml\nseed: 0\n```\n\nRaw rows: [results](results.json).\n"
    )
    page_path = write_html_report(tmp_path / "report.md")
    page = page_path.read_text()
    assert page_path == tmp_path / "report.html" and not list(tmp_path.glob(".*.tmp"))  # written atomically
    assert "<title>Bench: x &lt;y&gt;</title>" in page and "<code>code</code> &amp; more" in page
    assert '<td class="num">21.5 ± 0.2</td>' in page and '<td class="num">–</td>' in page
    assert "<li>lfq: cannot reach 3 bits</li>" in page and "<pre>seed: 0</pre>" in page
    assert embedded(page, "image/png") == [png] and embedded(page, "audio/wav") == [wav]  # the files' bytes
    assert "(missing picture: plots/gone.png)" in page and "results (results.json)" in page
    assert all(
        s.startswith("data:") for s in SOURCES.findall(page)
    )  # nothing to fetch: no server, no network
    assert '<figcaption>Rate-distortion: psnr</figcaption><img alt="psnr"' in page


def _digits_bench(tmp_path: Path) -> Path:
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        f"config: {ROOT / 'configs' / 'digits.yaml'}\n"
        "overrides: [train.steps=6, train.eval_every=6, train.checkpoint_every=6, eval.max_items=60]\n"
        "methods: [vq, fsq, residual_vq]\nbits: [4]\n"
        "fixed:\n  - {label: RVQ levels, name: residual_vq, kwargs: {codebook_size: 4, num_quantizers: 2},"
        " levels: true}\n"
    )
    return bench


@needs_chromium
def test_a_bench_report_shows_every_method_and_loads_in_a_browser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(_digits_bench(tmp_path)), "--out", str(out)]) == 0
    capsys.readouterr()
    report = (out / "report.md").read_text()
    for section in ("## Rate-distortion: psnr", "## Reconstructions", "## Code usage"):
        assert section in report, section
    from PIL import Image

    with Image.open(out / "plots" / "reconstructions.png") as grid:  # 8 digits in each of 6 rows of 0.45 in
        assert grid.width > 8 * 0.45 * 110 and grid.height > 5.5 * 0.45 * 110  # originals + 5 models
    page = (out / "report.html").read_text()
    assert len(embedded(page, "image/png")) == 4  # rd_psnr, rd_ssim, reconstructions, usage
    for method in ("vq", "fsq", "residual_vq", "RVQ levels (1/2 levels)"):
        assert f"<td>{method}</td>" in page, method
    assert browser_counts(out / "report.html", tmp_path) == {
        "images": 4,
        "loaded": 4,
        "audio": 0,
        "decoded": 0,
        "ready": 0,
    }
    width, height = screenshot(out / "report.html", tmp_path / "report.png")
    assert (width, height) == (1300, 1800) and (tmp_path / "report.png").stat().st_size > 20_000


def _has_espeak() -> bool:
    return any(Path(p, "espeak-ng").exists() for p in os.environ.get("PATH", "").split(os.pathsep))


@needs_chromium
def test_an_audio_bench_writes_clips_and_players_that_play(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not _has_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    tiny = (
        "data.num_clips=8, data.segment_seconds=0.5, model.n_filters=4, model.lstm=0, model.latent_dim=24, "
        "'model.stft_sizes=[256]', model.n_mels=32, model.mel_n_fft=512, train.batch_size=4, train.steps=2, "
        "train.eval_every=2, train.checkpoint_every=2, eval.max_items=4, eval.stoi=false, eval.pesq=false"
    )
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        f"config: {ROOT / 'configs' / 'speech.yaml'}\noverrides: [{tiny}]\nmethods: [vq, fsq]\nbits: [6]\n"
    )
    out = tmp_path / "bench"
    assert main(["bench", str(bench), "--out", str(out)]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (out / "audio").iterdir())
    assert names == sorted(f"{m}_{k}.wav" for m in ("original", "vq", "fsq") for k in range(3))
    with wave.open(str(out / "audio" / "vq_0.wav")) as clip:
        assert (clip.getnchannels(), clip.getframerate(), clip.getnframes()) == (1, 16000, 8000)  # 0.5 s
    report = (out / "report.md").read_text()
    assert "## Audio clips" in report and "[original_0.wav](audio/original_0.wav)" in report
    page = (out / "report.html").read_text()
    assert embedded(page, "audio/wav")[0] == (out / "audio" / "original_0.wav").read_bytes()
    assert browser_counts(out / "report.html", tmp_path) == {
        "images": 4,
        "loaded": 4,
        "audio": 9,
        "decoded": 9,
        "ready": 9,  # each player loaded its clip itself
    }


def test_eval_writes_the_per_model_pictures_and_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    tiny = ["train.steps=4", "train.eval_every=4", "train.checkpoint_every=4", "eval.max_items=40"]
    assert main(["train", str(ROOT / "configs" / "digits.yaml"), *tiny, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    report = (run / "report.md").read_text()
    assert "## Reconstructions" in report and "## Code usage" in report
    page = (run / "report.html").read_text()
    pictures = embedded(page, "image/png")
    assert len(pictures) == len(re.findall(r"!\[", report)) >= 4  # every picture of report.md, embedded
    assert (run / "plots" / "usage.png").read_bytes() in pictures
    assert "<td>codebook/utilization</td>" in page
    from PIL import Image

    with Image.open(io.BytesIO((run / "plots" / "reconstructions.png").read_bytes())) as grid:
        assert grid.width > grid.height  # 8 digits wide, 2 rows (original, reconstruction)


@needs_chromium
def test_the_browser_probe_catches_a_broken_picture_and_clip(tmp_path: Path) -> None:
    """The counts are not vacuous: a corrupt PNG does not load and a corrupt WAV neither decodes nor plays."""
    good = base64.b64encode(image_bytes(torch.rand(1, 4, 4))).decode()
    page = tmp_path / "page" / "report.html"
    page.parent.mkdir()
    page.write_text(
        f'<html><body><img src="data:image/png;base64,{good}"><img src="data:image/png;base64,AAAA">'
        '<audio controls src="data:audio/wav;base64,UklGRgAAAABXQVZF"></audio></body></html>'
    )
    counts = browser_counts(page, tmp_path)
    assert counts == {"images": 2, "loaded": 1, "audio": 1, "decoded": 0, "ready": 0}
