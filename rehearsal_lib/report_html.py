"""The report page's notebook cells as HTML, without nbconvert: the markup of nbconvert's `lab` template.

nbconvert's HTMLExporter cost ~3 s for a run's 15 notebooks (importing nbconvert and nbformat, a
jinja2 block per output, nbformat validation, then parsing and re-serialising the whole page with
BeautifulSoup to add `tabindex` and `alt` attributes). Our notebooks are thin and their outputs are our
own (HTML, markdown, plotly figures turned into HTML, images, tracebacks), so this module writes the
same markup directly: the lab template's cell and output structure and classes (`jp-Cell`,
`jp-OutputArea-output`...), its display priority (one representation per output), its stylesheets
(read from nbconvert's installed lab template, plus the pygments definitions it inlines), the
`tabindex="0"` and missing `alt` its exporter adds, and its markdown (mistune with the same plugins and
heading anchors). `tests/test_report_html.py` compares the two renderings of every output kind.

What it leaves out: LaTeX math in markdown is shown as typed (the report loads no MathJax either way),
widgets' state, and mermaid diagrams (no mermaid.js offline); nbconvert's page loaded both from a CDN.
One difference on purpose: in markdown, a link or image whose URL has a scheme other than http(s),
mailto, tel, ftp(s), irc(s), `data:image/...` or `attachment:` (e.g. `javascript:`, `file:`) points to
`#harmful-link` (mistune's policy; nbconvert let every scheme through).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from markupsafe import escape

TEMPLATES = Path(__file__).parent / "templates"

# nbconvert's HTMLExporter display priority: the first of these an output holds is the one shown
DISPLAY_PRIORITY = ("application/javascript", "text/html", "text/markdown", "image/svg+xml",
                    "text/latex", "image/png", "image/jpeg", "text/plain")
NO_ALT = "No description has been provided for this image"
_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\balt\s*=)(?=[\s/>])", re.I)

LAB_MISC_CSS = """/* Force rendering true colors when outputing to pdf */
* {
  -webkit-print-color-adjust: exact;
}
/* Misc */
a.anchor-link {
  display: none;
}
/* Input area styling */
.jp-InputArea {
  overflow: hidden;
}
.jp-InputArea-editor {
  overflow: hidden;
}
.cm-editor.cm-s-jupyter .highlight pre {
/* weird, but --jp-code-padding defined to be 5px but 4px horizontal padding is hardcoded for pre.cm-line */
  padding: var(--jp-code-padding) 4px;
  margin: 0;
  font-family: inherit;
  font-size: inherit;
  line-height: inherit;
  color: inherit;
}
.jp-OutputArea-output pre {
  line-height: inherit;
  font-family: inherit;
}
.jp-RenderedText pre {
  color: var(--jp-content-font-color1);
  font-size: var(--jp-code-font-size);
}
/* Hiding the collapser by default */
.jp-Collapser {
  display: none;
}
@page {
    margin: 0.5in; /* Margin for each printed piece of paper */
}
@media print {
  .jp-Cell-inputWrapper,
  .jp-Cell-outputWrapper {
    display: block;
  }
}
"""


@cache
def lab_stylesheets() -> tuple[str, ...]:
    """The CSS nbconvert's lab template (light theme) inlines in every page, read once per process."""
    from jupyter_core.paths import jupyter_path

    sheets = [(TEMPLATES / "report" / "highlight.css").read_text(encoding="utf-8")]
    for name in ("index.css", "theme-light.css"):
        for base in jupyter_path("nbconvert", "templates"):
            path = Path(base) / "lab" / "static" / name
            if path.is_file():
                sheets.append(path.read_text(encoding="utf-8"))
                break
        else:
            raise FileNotFoundError(f"nbconvert's lab template stylesheet {name} is not installed")
    sheets.append(LAB_MISC_CSS)
    return tuple(sheets)


def page(title: str, head_js: str, css: str, body: Iterable[str]) -> str:
    """The whole page: the lab template's head (its stylesheets, then ours) and `body` inside <main>."""
    styles = "".join(f'<style type="text/css">\n{sheet}</style>\n' for sheet in (*lab_stylesheets(), css))
    script = f'<script type="text/javascript">{head_js}</script>\n' if head_js else ""
    return ('<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"/>\n'
            '<meta content="width=device-width, initial-scale=1.0" name="viewport"/>\n'
            f"<title>{html.escape(title, quote=False)}</title>{script}{styles}</head>\n"
            '<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">\n'
            "<main>\n" + "".join(body) + "</main>\n</body>\n</html>\n")


def text_of(value: Any) -> str:
    """A notebook JSON string field, which may be stored as a list of lines."""
    if isinstance(value, list):
        return "".join(value)
    return value if isinstance(value, str) else str(value or "")


# --- ANSI colours in streams and tracebacks (nbconvert.filters.ansi2html, same classes) ---------------
_ANSI_RE = re.compile("\x1b\\[(.*?)([@-~])")
_ANSI_COLORS = ("ansi-black", "ansi-red", "ansi-green", "ansi-yellow", "ansi-blue", "ansi-magenta", "ansi-cyan",
                "ansi-white", "ansi-black-intense", "ansi-red-intense", "ansi-green-intense",
                "ansi-yellow-intense", "ansi-blue-intense", "ansi-magenta-intense", "ansi-cyan-intense",
                "ansi-white-intense")


def _extended_color(numbers: list[int]) -> int | tuple[int, int, int]:
    n = numbers.pop(0)
    if n == 2 and len(numbers) >= 3:
        r, g, b = numbers.pop(0), numbers.pop(0), numbers.pop(0)
        if not all(0 <= c <= 255 for c in (r, g, b)):
            raise ValueError
        return r, g, b
    if n == 5 and len(numbers) >= 1:
        idx = numbers.pop(0)
        if idx < 0 or idx >= 256:
            raise ValueError
        if idx < 16:
            return idx
        if idx < 232:
            r, g, b = (idx - 16) // 36, ((idx - 16) % 36) // 6, (idx - 16) % 6
            return tuple(55 + c * 40 if c > 0 else 0 for c in (r, g, b))  # type: ignore[return-value]
        return ((idx - 232) * 10 + 8,) * 3  # type: ignore[return-value]
    raise ValueError


def _span(fg: Any, bg: Any, bold: bool, underline: bool, inverse: bool) -> tuple[str, str]:
    if (fg, bg, bold, underline, inverse) == (None, None, False, False, False):
        return "", ""
    classes, styles = [], []
    if inverse:
        fg, bg = bg, fg
    for colour, part, prop in ((fg, "fg", "color"), (bg, "bg", "background-color")):
        if isinstance(colour, int):
            classes.append(f"{_ANSI_COLORS[colour]}-{part}")
        elif colour:
            styles.append("{}: rgb({},{},{})".format(prop, *colour))
        elif inverse:
            classes.append(f"ansi-default-inverse-{part}")
    if bold:
        classes.append("ansi-bold")
    if underline:
        classes.append("ansi-underline")
    tag = "<span" + (f' class="{" ".join(classes)}"' if classes else "") + (
        f' style="{"; ".join(styles)}"' if styles else "")
    return tag + ">", "</span>"


def ansi2html(text: str) -> str:
    """Escaped text with its ANSI colour codes as spans; other escape sequences are dropped."""
    text = str(escape(text))
    if "\x1b" not in text:
        return text
    fg: Any = None
    bg: Any = None
    bold = underline = inverse = False
    numbers: list[int] = []
    out: list[str] = []
    while text:
        m = _ANSI_RE.search(text)
        if m:
            if m.group(2) == "m":
                try:
                    numbers = [int(n) if n else 0 for n in m.group(1).split(";")]
                except ValueError:
                    pass
            chunk, text = text[:m.start()], text[m.end():]
        else:
            chunk, text = text, ""
        if chunk:
            start, end = _span(fg + 8 if bold and fg in range(8) else fg, bg, bold, underline, inverse)
            out += (start, chunk, end)
        while numbers:
            n = numbers.pop(0)
            if n == 0:
                fg = bg = None
                bold = underline = inverse = False
            elif n in (1, 5):
                bold = True
            elif n == 4:
                underline = True
            elif n == 7:
                inverse = True
            elif n in (21, 22):
                bold = False
            elif n == 24:
                underline = False
            elif n == 27:
                inverse = False
            elif 30 <= n <= 37:
                fg = n - 30
            elif n in (38, 48):
                try:
                    color = _extended_color(numbers)
                except (ValueError, IndexError):
                    numbers.clear()
                    continue
                if n == 38:
                    fg = color
                else:
                    bg = color
            elif n == 39:
                fg = None
            elif 40 <= n <= 47:
                bg = n - 40
            elif n == 49:
                bg = None
            elif 90 <= n <= 97:
                fg = n - 90 + 8
            elif 100 <= n <= 107:
                bg = n - 100 + 8
    return "".join(out)


# --- markdown (nbconvert's markdown2html: mistune, same plugins, headings with anchors) ---------------
def _heading_anchor(heading: str) -> str:
    """nbconvert's add_anchor: the heading gets an id from its text and a hidden ¶ link."""
    try:
        h = ElementTree.fromstring(heading)
    except ElementTree.ParseError:
        return heading
    link = quote("".join(h.itertext()).replace(" ", "-"), safe="?/:@!$&'()*+,;=")
    h.set("id", link)
    a = ElementTree.SubElement(h, "a", {"class": "anchor-link", "href": "#" + link})
    a.text = "¶"
    return ElementTree.tostring(h).decode("utf-8")


@cache
def _markdown() -> Any:
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text: str, level: int, **attrs: Any) -> str:
            return _heading_anchor(super().heading(text, level, **attrs))

        def block_code(self, code: str, info: str | None = None) -> str:
            lang = info.strip().split(None, 1)[0] if info and info.strip() else ""
            if lang:
                from pygments import highlight
                from pygments.formatters import HtmlFormatter
                from pygments.lexers import get_lexer_by_name
                from pygments.util import ClassNotFound

                try:
                    return highlight(code, get_lexer_by_name(lang), HtmlFormatter())
                except ClassNotFound:
                    code = f"{lang}\n{code}"
            return super().block_code(code)

        def escape_html(self, text: str) -> str:  # type: ignore[override]
            return html.escape(text, quote=False)

    return mistune.create_markdown(renderer=Renderer(escape=False, allow_harmful_protocols=("attachment:",)),
                                   plugins=["strikethrough", "table", "url", "task_lists", "def_list"])


def markdown2html(source: str) -> str:
    return str(_markdown()(source))


# --- cells --------------------------------------------------------------------------------------------
def _celltags(cell: dict) -> str:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return "".join(html.escape(f" celltag_{tag}") for tag in tags)


def _cell_id(cell: dict) -> str:
    cid = cell.get("id")
    return f' id="{html.escape("cell-id=" + cid)}"' if cid else ""


def _clean_html(fragment: str) -> str:
    """nbconvert's clean_html (bleach, the same allowed tags): what the lab template does to a raw cell."""
    import bleach

    return str(bleach.clean(fragment, tags=[*bleach.ALLOWED_TAGS, "div", "pre", "code", "span", "table", "tr", "td"],
                            attributes={**bleach.ALLOWED_ATTRIBUTES, "*": ["class", "id"]}))


def _highlight_code(source: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    return highlight(source, get_lexer_by_name("ipython3"), HtmlFormatter(cssclass=" highlight hl-ipython3"))


def _image(mime: str, data: str, output: dict) -> str:
    meta = (output.get("metadata") or {}).get(mime) or {}
    size = "".join(f"\n{k}={html.escape(str(meta[k]))}" for k in ("width", "height") if meta.get(k) is not None)
    classes = ("\nunconfined" if meta.get("unconfined") else "") + {
        "light": "\njp-needs-light-background", "dark": "\njp-needs-dark-background"}.get(
        str(meta.get("needs_background")), "")
    return (f'<img alt="{NO_ALT}" src="data:{mime};base64,{html.escape(data)}"{size}\nclass="{classes}"\n>')


_ATTACHMENT_SRC = re.compile(r'src="attachment:([^"]*)"')


def _attachment_uri(attachments: dict, match: re.Match[str]) -> str:
    """An image pasted into a markdown cell (`attachment:NAME`) as a data URI, vector over raster as
    nbconvert chooses; a missing one stays as written."""
    bundle = attachments.get(html.unescape(match.group(1)))
    if not isinstance(bundle, dict) or not bundle:
        return match.group(0)
    mime = next((m for m in ("image/svg+xml", "image/png", "image/jpeg") if m in bundle), next(iter(bundle)))
    return f'src="data:{html.escape(mime)};base64,{html.escape(text_of(bundle[mime]))}"'


def render_data(output: dict, extra: str) -> str:
    """A display_data / execute_result output: its first representation in display priority order."""
    data = output.get("data") or {}
    mime = next((m for m in DISPLAY_PRIORITY if m in data), None)
    if mime is None:
        return ""
    value = text_of(data[mime])
    if mime == "text/html":
        return (f'<div class="jp-RenderedHTMLCommon jp-RenderedHTML jp-OutputArea-output {extra}" '
                f'data-mime-type="text/html" tabindex="0">\n{_IMG_WITHOUT_ALT.sub(f"<img alt={NO_ALT!r}", value)}\n'
                "</div>")
    if mime == "text/markdown":
        body = _IMG_WITHOUT_ALT.sub(f"<img alt={NO_ALT!r}", markdown2html(value))
        return (f'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-OutputArea-output {extra}" '
                f'data-mime-type="text/markdown" tabindex="0">\n{body}\n</div>')
    if mime == "text/plain":
        return (f'<div class="jp-RenderedText jp-OutputArea-output {extra}" data-mime-type="text/plain" '
                f'tabindex="0">\n<pre>{ansi2html(value)}</pre>\n</div>')
    if mime == "text/latex":
        return (f'<div class="jp-RenderedLatex jp-OutputArea-output {extra}" data-mime-type="text/latex" '
                f'tabindex="0">\n{escape(value)}\n</div>')
    if mime == "image/svg+xml":
        import base64

        b64 = base64.b64encode(value.encode("utf-8")).decode("ascii")
        return (f'<div class="jp-RenderedSVG jp-OutputArea-output {extra}" data-mime-type="image/svg+xml" '
                f'tabindex="0">\n<img alt="{NO_ALT}" src="data:image/svg+xml;base64,{b64}"/>\n</div>')
    if mime in ("image/png", "image/jpeg"):
        return (f'<div class="jp-RenderedImage jp-OutputArea-output {extra}" tabindex="0">\n'
                f"{_image(mime, value, output)}\n</div>")
    # application/javascript: nbconvert runs it in place (the page is not sanitized)
    div_id = f"rh-js-{id(output):x}"
    return (f'<div class="jp-RenderedJavaScript jp-OutputArea-output {extra}" data-mime-type="application/javascript" '
            f'id="{div_id}" tabindex="0">\n<script type="text/javascript">\nvar element = document.getElementById('
            f"'{div_id}');\n{value}\n</script>\n</div>")


def render_output(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        name = output.get("name")
        mime = {"stdout": "text/plain", "stderr": "application/vnd.jupyter.stderr"}.get(str(name))
        if mime is None:
            return ""
        text = text_of(output.get("text"))
        body = f'<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="{mime}" tabindex="0">\n' \
               f"<pre>{ansi2html(text)}</pre>\n</div>"
        return f'<div class="jp-OutputArea-child">\n{body}\n</div>\n'
    if kind == "error":
        lines = "".join("\n" + ansi2html(text_of(line)) for line in output.get("traceback") or [])
        body = (f'<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr" '
                f'tabindex="0">\n<pre>{lines}</pre>\n</div>')
        return f'<div class="jp-OutputArea-child">\n{body}\n</div>\n'
    if kind in ("display_data", "execute_result"):
        result = kind == "execute_result"
        extra = "jp-OutputArea-executeResult" if result else ""
        child = "jp-OutputArea-child jp-OutputArea-executeResult" if result else "jp-OutputArea-child"
        return f'<div class="{child}">\n{render_data(output, extra)}\n</div>\n'
    return ""


def render_cell(cell: dict, show_code: bool) -> str:
    """One cell as the lab template writes it (no prompts; code input only with `show_code`)."""
    kind = cell.get("cell_type")
    remove_source = ((cell.get("metadata") or {}).get("transient") or {}).get("remove_source", False)
    if kind == "markdown":
        if remove_source:
            return ""
        body = _IMG_WITHOUT_ALT.sub(f"<img alt={NO_ALT!r}", markdown2html(text_of(cell.get("source"))))
        if cell.get("attachments"):
            body = _ATTACHMENT_SRC.sub(lambda m: _attachment_uri(cell["attachments"], m), body)
        return (f'<div class="jp-Cell jp-MarkdownCell jp-Notebook-cell"{_cell_id(cell)}>\n'
                '<div class="jp-Cell-inputWrapper" tabindex="0">\n'
                '<div class="jp-Collapser jp-InputCollapser jp-Cell-inputCollapser">\n</div>\n'
                '<div class="jp-InputArea jp-Cell-inputArea">'
                f'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-MarkdownOutput {_celltags(cell)}" '
                f'data-mime-type="text/markdown">\n{body}\n</div>\n</div>\n</div>\n</div>\n')
    if kind == "raw":
        mime = ((cell.get("metadata") or {}).get("raw_mimetype") or "").lower()
        return _clean_html(text_of(cell.get("source"))) if mime in ("", "text/html") and not remove_source else ""
    if kind != "code":
        return ""
    outputs = cell.get("outputs") or []
    classes = "jp-Cell jp-CodeCell jp-Notebook-cell" + ("" if outputs else " jp-mod-noOutputs") + (
        "" if show_code else " jp-mod-noInput") + _celltags(cell)
    parts = [f'<div class="{classes}"{_cell_id(cell)}>\n']
    if show_code and not remove_source:
        parts.append('<div class="jp-Cell-inputWrapper" tabindex="0">\n'
                     '<div class="jp-Collapser jp-InputCollapser jp-Cell-inputCollapser">\n</div>\n'
                     '<div class="jp-InputArea jp-Cell-inputArea">\n'
                     '<div class="jp-CodeMirrorEditor jp-Editor jp-InputArea-editor" data-type="inline">\n'
                     f'<div class="cm-editor cm-s-jupyter">\n{_highlight_code(text_of(cell.get("source")))}</div>\n'
                     "</div>\n</div>\n</div>\n")
    if outputs:
        parts.append('<div class="jp-Cell-outputWrapper">\n'
                     '<div class="jp-Collapser jp-OutputCollapser jp-Cell-outputCollapser">\n</div>\n'
                     '<div class="jp-OutputArea jp-Cell-outputArea">\n')
        parts += [render_output(o) for o in outputs]
        parts.append("</div>\n</div>\n")
    parts.append("</div>\n")
    return "".join(parts)
