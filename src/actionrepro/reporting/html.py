"""Render one list of report blocks twice: as Markdown (report.md) and as one self-contained HTML
page (report.html: inline CSS, figures as base64 PNG, no request leaves the file).

Blocks are plain tuples:
  ("h1" | "h2" | "h3", text)          ("p", text)          ("ul", [text, ...])
  ("table", DataFrame, caption)        ("code", text)       ("figure", name, png_bytes, caption)
  ("details", summary, DataFrame, caption): a table folded under its summary line (HTML <details>;
  in Markdown a bold line above the table)
Text may hold `code` spans, **bold** and [text](relative/link), rendered as <code>, <strong> and <a>
in HTML.
"""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }
p.caption { font-style: italic; font-size: 13px; margin: 1em 0 .3em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 12px; background: #f5f5f5; }
pre { padding: .6em; overflow-x: auto; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-style: italic; font-size: 13px; }
details { margin: .2em 0; }
summary { cursor: pointer; font-size: 14px; }
img.broken { min-width: 200px; min-height: 40px; outline: 3px solid #c00; }
.scroll { overflow-x: auto; }
"""

# Marks every figure that failed to decode (and counts them on <body>), so a broken report is
# visible to a reader and checkable by a headless browser.
CHECK_IMAGES = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; } else { images[i].classList.add("broken"); }
  }
  document.body.setAttribute("data-images-total", String(images.length));
  document.body.setAttribute("data-images-loaded", String(loaded));
});
"""

_NUMERIC = re.compile(r"^[+\-−]?\d[\d.,]*(\s*(%|×|±.*))?$")


# ---------------------------------------------------------------- markdown
def _md_cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(none)_\n"
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def render_markdown(blocks: list[tuple], figure_dir: str = "figures") -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1] + "\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "ul":
            out.append("".join(f"- {item}\n" for item in block[1]))
        elif kind == "table":
            _, frame, caption = block
            out.append((f"*{caption}*\n\n" if caption else "") + markdown_table(frame))
        elif kind == "details":
            _, summary, frame, caption = block
            out.append(f"**{summary}**" + (f" — *{caption}*" if caption else "") + "\n\n" + markdown_table(frame))
        elif kind == "code":
            out.append("```\n" + block[1].rstrip("\n") + "\n```\n")
        elif kind == "figure":
            _, name, _png, caption = block
            out.append(f"![{name}]({figure_dir}/{name}.png)\n\n*{caption}* ([SVG]({figure_dir}/{name}.svg))\n")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return "\n".join(out)


# ---------------------------------------------------------------- html
def inline(text: str) -> str:
    """Escape text for HTML, turning `code` spans into <code> and **bold** into <strong>."""
    parts = re.split(r"(`[^`]+`)", str(text))
    out = []
    for part in parts:
        if _CODE.fullmatch(part):
            out.append(f"<code>{html.escape(part[1:-1], quote=True)}</code>")
        else:
            text = _BOLD.sub(r"<strong>\1</strong>", html.escape(part, quote=True))
            out.append(_LINK.sub(r'<a href="\2">\1</a>', text))
    return "".join(out)


def _td(value) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    css = ' class="num"' if _NUMERIC.match(text) else ""
    return f"<td{css}>{inline(text)}</td>"


def html_table(frame: pd.DataFrame, caption: str = "") -> str:
    if frame.empty:
        return (f'<p class="caption">{inline(caption)}</p>' if caption else "") + "<p><em>(none)</em></p>\n"
    head = "".join(f"<th>{inline(c)}</th>" for c in frame.columns)
    body = "\n".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    cap = f'<p class="caption">{inline(caption)}</p>' if caption else ""
    return f'<div class="scroll">{cap}<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>\n'


def render_html(blocks: list[tuple], title: str) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            anchor = re.sub(r"[^a-z0-9]+", "-", block[1].lower()).strip("-")
            parts.append(f'<{kind} id="{anchor}">{inline(block[1])}</{kind}>')
        elif kind == "p":
            parts.append(f"<p>{inline(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            parts.append(html_table(block[1], block[2]))
        elif kind == "details":
            _, summary, frame, caption = block
            parts.append(f"<details><summary>{inline(summary)}</summary>\n{html_table(frame, caption)}</details>")
        elif kind == "code":
            parts.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "figure":
            _, name, png, caption = block
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure id="fig-{html.escape(name)}"><img src="data:image/png;base64,{data}" '
                         f'alt="{html.escape(caption)}"><figcaption>{inline(caption)}</figcaption></figure>')
        else:
            raise ValueError(f"unknown report block {kind!r}")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n"
            f"<script>{CHECK_IMAGES}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
