"""``report.html``: a report's ``report.md`` as one self-contained page (no network, no server, no script).

The page is made from the markdown the report writer produced, so its tables and text are the markdown's:
headings, paragraphs, bullet lists, tables, fenced code and ``<details>`` folds. Every picture the markdown
links (``![...](plots/x.png)``) is embedded as a base64 ``data:`` URI, every WAV link becomes an ``<audio
controls>`` player holding the file the same way, and other links (``results.json``) become plain text, since
the page must work wherever it is copied. Consecutive sections that are one picture each are laid out in a
grid of two columns (a picture wider than ``WIDE_PX`` takes a whole row). Written atomically, beside ``report.md``.

Only the subset of markdown the reports write is read; this is not a general markdown renderer.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from pathlib import Path

from vqkit.utils.atomic import atomic_write_text

WIDE_PX = 900
"""A picture this many pixels wide or wider spans the grid's row."""

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?( ± [\d.e+-]+)?$|^–$")
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".wav": "audio/wav"}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1500px;
  padding: 16px 28px; color: #1d232a; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 12px; }
h2 { font-size: 17px; margin: 22px 0 8px; border-bottom: 1px solid #dde3ea; }
p { max-width: 1000px; } code { background: #f2f4f7; padding: 0 3px; border-radius: 3px; font-size: 90%; }
pre { background: #f6f8fa; padding: 8px 12px; overflow-x: auto; font-size: 12px; max-height: 420px; }
.table { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #dde3ea; padding: 3px 6px; white-space: nowrap; }
th { white-space: normal; min-width: 3.5em; vertical-align: bottom; }
th { background: #eef2f6; position: sticky; top: 0; } tr:nth-child(even) td { background: #f8fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td:first-child { font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px 28px; align-items: start; }
@media (max-width: 1000px) { .figures { grid-template-columns: minmax(0, 1fr); } }
figure { margin: 0; } figure.wide { grid-column: 1 / -1; }
figcaption { font-weight: 600; font-size: 15px; margin: 12px 0 6px; border-bottom: 1px solid #dde3ea; }
figure img { max-width: 100%; height: auto; } audio { height: 32px; width: 230px; }
"""


def write_html_report(markdown: Path) -> Path:
    """``report.html`` beside ``markdown`` (a ``report.md``), its pictures and WAVs embedded; returns its path."""
    root = markdown.parent
    lines = markdown.read_text(encoding="utf-8").splitlines()
    title = next((line[2:].replace("`", "") for line in lines if line.startswith("# ")), markdown.stem)
    body = _blocks(lines, root)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    return atomic_write_text(root / "report.html", page)


def data_uri(path: Path) -> str | None:
    """``path``'s bytes as a ``data:`` URI (None: missing, or not a kind the page embeds)."""
    media = _MEDIA.get(path.suffix.lower())
    if media is None or not path.is_file():
        return None
    return f"data:{media};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _png_width(path: Path) -> int:
    head = path.read_bytes()[:24] if path.is_file() else b""
    return int(struct.unpack(">I", head[16:20])[0]) if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _inline(text: str, root: Path) -> str:
    """Escaped text with `code`, and links as players (WAV), else as their text."""
    parts = []
    position = 0
    for match in _LINK.finditer(text):
        parts.append(_code(text[position : match.start()]))
        label, target = match.group(1), match.group(2)
        uri = data_uri(root / target) if target.lower().endswith(".wav") else None
        if uri is not None:
            parts.append(
                f'<audio controls preload="metadata" title="{html.escape(label)}" src="{uri}"></audio>'
            )
        else:
            parts.append(_code(label if target.lower().endswith(".wav") else f"{label} ({target})"))
        position = match.end()
    parts.append(_code(text[position:]))
    return "".join(parts)


def _code(text: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def _table(rows: list[str], root: Path) -> str:
    cells = [
        [c.strip() for c in row.strip().strip("|").split("|")] for row in rows if not set(row) <= set("|-: ")
    ]
    head, *body = cells
    out = [
        '<div class="table"><table><thead><tr>',
        *[f"<th>{_inline(c, root)}</th>" for c in head],
        "</tr></thead><tbody>",
    ]
    for row in body:
        out.append("<tr>" + "".join(_cell(c, root) for c in row) + "</tr>")
    return "".join([*out, "</tbody></table></div>"])


def _cell(text: str, root: Path) -> str:
    """A body cell; numbers (``24.1``, ``0.93 ± 0.01``, ``–``) right-aligned."""
    kind = ' class="num"' if _NUMBER.match(text) else ""
    return f"<td{kind}>{_inline(text, root)}</td>"


def _figure(title: str, alt: str, target: str, root: Path) -> str:
    uri = data_uri(root / target)
    wide = ' class="wide"' if _png_width(root / target) >= WIDE_PX else ""
    image = (
        f'<img alt="{html.escape(alt)}" src="{uri}">'
        if uri
        else f"<p>(missing picture: {html.escape(target)})</p>"
    )
    return f"<figure{wide}><figcaption>{_inline(title, root)}</figcaption>{image}</figure>"


def _blocks(lines: list[str], root: Path) -> str:
    """The body: markdown blocks in order, runs of one-picture sections gathered into a grid."""
    out: list[str] = []
    figures: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():  # blank lines separate blocks, not the pictures of one grid
            i += 1
            continue
        section_picture = line.startswith("## ") and _picture_section(lines, i)
        if section_picture:
            alt, target, i = section_picture
            figures.append(_figure(line[3:], alt, target, root))
            continue
        if figures:
            out.append('<div class="figures">' + "".join(figures) + "</div>")
            figures = []
        block, i = _block(lines, i, root)
        out.append(block)
    if figures:
        out.append('<div class="figures">' + "".join(figures) + "</div>")
    return "\n".join(b for b in out if b)


def _picture_section(lines: list[str], i: int) -> tuple[str, str, int] | None:
    """``(alt, target, next line)`` when the ``##`` heading at ``i`` is followed by a picture."""
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    match = _IMAGE.match(lines[j].strip()) if j < len(lines) else None
    if match is None:
        return None
    return match.group(1), match.group(2), j + 1


def _block(lines: list[str], i: int, root: Path) -> tuple[str, int]:
    """One markdown block starting at line ``i``, as HTML, and the line after it."""
    line = lines[i]
    if not line.strip():
        return "", i + 1
    if line.startswith("#"):
        level = len(line) - len(line.lstrip("#"))
        return f"<h{level}>{_inline(line[level:].strip(), root)}</h{level}>", i + 1
    if line.startswith("```"):
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        return "<pre>" + html.escape("\n".join(lines[i + 1 : end])) + "</pre>", end + 1
    if line.startswith(("<details>", "</details>")):  # the reports' own folds, passed through
        return line, i + 1
    group = [line]
    j = i + 1
    kind = "|" if line.startswith("|") else "*" if line.startswith("* ") else "p"
    while j < len(lines) and lines[j].strip() and not lines[j].startswith(("#", "```", "<")):
        if (kind == "|") != lines[j].startswith("|") or (kind == "*") != lines[j].startswith("* "):
            break
        group.append(lines[j])
        j += 1
    if kind == "|":
        return _table(group, root), j
    if kind == "*":
        return "<ul>" + "".join(f"<li>{_inline(g[2:], root)}</li>" for g in group) + "</ul>", j
    image = _IMAGE.match(line.strip())
    if image and len(group) == 1:
        return _figure(image.group(1), image.group(1), image.group(2), root), j
    return f"<p>{_inline(' '.join(group), root)}</p>", j
