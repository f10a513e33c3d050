"""The pieces of the self-contained HTML pages `transfer` writes (`report.html`, `audit.html`):
images as data URIs, thumbnails of the user's photos, sections and the page itself.

Every image is embedded, so a page can be mailed or archived as one file and never fetches anything.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageOps

from transfer.core.version import __version__


def thumbnail(path: str, side: int = 160) -> str:
    """An `<img>` of the photo at `path`, at most `side` pixels (small images enlarged, pixels kept sharp)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((side, side))
            if max(image.size) < side // 2:  # small images (digits) enlarged, pixels kept sharp
                factor = side // max(image.size)
                image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        return f"<div class=missing>cannot show {html.escape(path)}</div>"
    return data_uri(buffer.getvalue(), "thumbnail")


def image(path: Path, alt: str) -> str:
    """An `<img>` of a PNG file `transfer` drew."""
    return data_uri(Path(path).read_bytes(), alt)


def data_uri(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def page(title: str, body: str, generator: str | None = None) -> str:
    """The whole page; `generator` names what wrote it in a `<meta name=\"generator\">` (a report's marker)."""
    meta = f'<meta name="generator" content="{html.escape(generator)} {__version__}">' if generator else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{meta}<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ margin-bottom: 0; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }}
.headline {{ font-size: 1.3rem; }} #accuracy {{ font-size: 2.4rem; font-weight: 700; color: #2a7; }}
table {{ border-collapse: collapse; font-size: .9rem; }} th, td {{ padding: .2rem .6rem; text-align: left; border-bottom: 1px solid #eee; }}
table.numbers td {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem; }}
.card {{ margin: 0; padding: .5rem; border: 1px solid #ddd; border-radius: 6px; }}
.card ol {{ margin: .3rem 0; padding-left: 1.2rem; }} .card small {{ color: #777; word-break: break-all; }}
</style></head>
<body>
{body}
</body></html>
"""
