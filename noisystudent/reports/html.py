"""The HTML of report.html's pages: one self-contained file, pictures embedded as data URIs (at
most THUMB px a side), tables and grids of figures, a confusion matrix (at most MAX_CLASSES
classes; above that, the MAX_SHOWN most confused pairs), no script and nothing fetched."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import torch
from PIL import Image

from noisystudent.core import runs

MAX_CLASSES = 20
MAX_SHOWN = 24
THUMB = 64
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0 10px}
figure{margin:0;width:66px;text-align:center;font-size:11px;line-height:1.2}
figure img{width:60px;height:60px;object-fit:contain;image-rendering:pixelated;
background:#eee;border:2px solid transparent}
figure.wrong img{border-color:#d33}.missing{display:inline-block;width:60px;height:60px;
background:#eee;font-size:10px}.row{display:flex;gap:12px;align-items:flex-start}
.note{color:#666}.warn{color:#a40}.plots{display:flex;gap:8px;flex-wrap:wrap}
.plots img{height:300px;max-width:100%}h4{margin:8px 0 0}
.row small{display:block;color:#666}
"""


def bytes_uri(data: bytes, kind: str = "png") -> str:
    """An encoded image embedded in the page: the one way every picture gets there."""
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def data_uri(picture: Image.Image) -> str:
    """A small PNG (grayscale or tiny) or JPEG of the picture, at most THUMB px a side."""
    picture = picture.convert("L" if picture.mode in ("L", "I;16", "I", "1") else "RGB")
    picture.thumbnail((THUMB, THUMB))
    kind = "png" if picture.mode == "L" or max(picture.size) <= 32 else "jpeg"
    buffer = io.BytesIO()
    picture.save(buffer, format=kind.upper(), **({"quality": 85} if kind == "jpeg" else {}))
    return bytes_uri(buffer.getvalue(), kind)


def file_uri(path: Path) -> str:
    """A PNG file (the run's plots), as it is."""
    return bytes_uri(path.read_bytes())


def esc(value) -> str:
    return html.escape(str(value))


def figure(uri: str | None, caption: str, wrong: bool = False) -> str:
    image = (f'<img src="{uri}" alt="{esc(caption)}">' if uri else
             '<span class="missing">not at hand</span>')
    return (f'<figure{" class=wrong" if wrong else ""}>{image}'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def grid(figures: list[str]) -> str:
    return f'<div class="grid">{"".join(figures)}</div>' if figures else \
        '<p class="note">none</p>'


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def confusion_html(matrix: torch.Tensor, classes: list[str], caption: str) -> str:
    """A row-normalized matrix with shaded cells for a few classes; above MAX_CLASSES, the
    most frequent confusions as a list."""
    if len(classes) > MAX_CLASSES:
        off = matrix.clone()
        off.fill_diagonal_(0)
        counts, cells = off.flatten().topk(min(MAX_SHOWN, off.numel()))
        rows = [[classes[c // len(classes)], classes[c % len(classes)], int(n)]
                for n, c in zip(counts.tolist(), cells.tolist()) if n > 0]
        return (f"<p>{esc(caption)}: the {len(rows)} most frequent confusions of "
                f"{len(classes)} classes</p>" + table(["true", "called", "images"], rows))
    totals = matrix.sum(1, keepdim=True).clamp(min=1)
    share = matrix.float() / totals
    head = "".join(f"<th>{esc(c)}</th>" for c in classes)
    body = []
    for i, name in enumerate(classes):
        cells = "".join(
            f'<td style="background:rgba({"40,110,200" if i == j else "210,60,40"},'
            f'{min(1.0, float(share[i, j])) * 0.85:.2f})">{int(matrix[i, j])}</td>'
            for j in range(len(classes)))
        body.append(f"<tr><th>{esc(name)}</th>{cells}</tr>")
    return (f"<p>{esc(caption)} (rows: true class, columns: predicted; shaded by the row's "
            f"share)</p><table><tr><th></th>{head}</tr>{''.join(body)}</table>")


def write_page(out: Path, title: str, sections: list[str]) -> Path:
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    runs.write_text(out, page)
    return out
