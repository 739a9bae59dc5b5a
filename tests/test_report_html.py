"""The report's own cell renderer (report_html) writes what nbconvert's lab template wrote, for every kind
of output a phase notebook can hold: same elements, classes, attributes and text, one representation per
output in nbconvert's display priority, text escaped, ANSI colours as spans and other escape sequences
dropped. nbconvert is the reference here only: the report no longer imports it."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from rehearsal_lib.report_html import ansi2html, markdown2html, page, render_cell

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
HOSTILE = "<script>alert(1)</script> & \"quoted\" 'single'"


def _out(output_type: str, **kw: Any) -> dict:
    if output_type == "stream":
        return {"output_type": "stream", **kw}
    if output_type == "error":
        return {"output_type": "error", "ename": "ValueError", "evalue": "bad", **kw}
    out = {"output_type": output_type, "metadata": kw.pop("metadata", {}), "data": kw}
    if output_type == "execute_result":
        out["execution_count"] = 3
    return out


def _notebook() -> dict:
    md = ("# Phase 1 — Preflight\n\nSome *text* with `code` and a [link](https://example.invalid/x).\n\n"
          "## Table & more\n\n| a | b |\n| --- | --- |\n| 1 | <b>2</b> |\n\n- [x] done\n- ~~gone~~\n\n"
          "```python\nprint('hi')\n```\n\n```\nplain < block\n```\n\n<div class=\"rh-phase-head\">raw html "
          "<img src=\"data:image/png;base64,AAAA\"></div>\n")
    code = "import os\nprint(os.getcwd())  # comment\n"
    cells = [
        {"cell_type": "markdown", "id": "m1", "metadata": {"tags": ["intro"]}, "source": md},
        {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": ["Line one\n", "line *two*\n\n",
                                                                          "![pasted](attachment:shot.png)"],
         "attachments": {"shot.png": {"image/png": PNG}}},
        {"cell_type": "code", "id": "c1", "metadata": {"tags": ["evidence", "x<y"]}, "execution_count": 1,
         "source": code, "outputs": [
             _out("stream", name="stdout", text=["first\n", "second "]),
             _out("stream", name="stdout", text="joined\n"),
             _out("stream", name="stderr", text="warn \x1b[31mred\x1b[0m \x1b[2J" + HOSTILE + "\n"),
             _out("display_data", **{"text/html": "<table class='t'><tr><td>1</td></tr></table><img src='x.png'>",
                                     "text/plain": "ignored"}),
             _out("display_data", **{"text/markdown": "**bold** " + "and a list:\n\n- one\n- two",
                                     "text/plain": "ignored"}),
             _out("display_data", **{"text/plain": "\x1b[1;32mok\x1b[0m \x1b[38;5;196mx\x1b[48;2;1;2;3my\x1b[0m "
                                                   + HOSTILE}),
             _out("display_data", metadata={"image/png": {"width": 40, "height": 20}},
                  **{"image/png": PNG, "text/plain": "<Figure>"}),
             _out("display_data", **{"image/jpeg": PNG, "text/plain": "<Figure>"}),
             _out("display_data", **{"image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'></svg>"}),
             _out("display_data", **{"text/latex": "$x < y$"}),
             _out("execute_result", **{"text/plain": "42"}),
             _out("display_data", **{"application/x-unknown": "nothing shown"}),
         ]},
        {"cell_type": "code", "id": "c2", "metadata": {}, "execution_count": 2, "source": "raise ValueError('bad')",
         "outputs": [_out("error", traceback=["\x1b[0;31m---------\x1b[0m", "\x1b[0;31mValueError\x1b[0m: bad <x>"])]},
        {"cell_type": "code", "id": "c3", "metadata": {}, "execution_count": 4, "source": "x = 1", "outputs": []},
        {"cell_type": "raw", "id": "r1", "metadata": {}, "source": "<p>raw</p>"},
    ]
    return {"cells": cells, "metadata": {"title": "T <&>"}, "nbformat": 4, "nbformat_minor": 5}


def _elements(page_html: str) -> tuple[list, str]:
    from bs4 import BeautifulSoup

    main = BeautifulSoup(page_html, "html.parser").find("main")
    assert main is not None
    found = []
    for tag in main.find_all(True):
        attrs = {k: " ".join(v) if isinstance(v, list) else v for k, v in tag.attrs.items()}
        if tag.name == "script" or "jp-RenderedJavaScript" in attrs.get("class", ""):
            attrs.pop("id", None)
        found.append((tag.name, sorted(attrs.items())))
    return found, " ".join(main.get_text().split())


@pytest.fixture(scope="module")
def nbconvert_page():
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")

    def convert(show_code: bool) -> str:
        nb = nbformat.reads(json.dumps(_notebook()), as_version=4)
        exporter = nbconvert.HTMLExporter(template_name="lab", exclude_input=not show_code,
                                          exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
        return exporter.from_notebook_node(nb)[0]

    return convert


@pytest.mark.parametrize("show_code", [False, True])
def test_cells_render_as_nbconvert_lab_template_renders_them(nbconvert_page, show_code: bool):
    ours = page("T <&>", "", "", [render_cell(c, show_code) for c in _notebook()["cells"]])
    theirs = nbconvert_page(show_code)
    (ours_elems, ours_text), (their_elems, their_text) = _elements(ours), _elements(theirs)
    assert ours_text == their_text
    assert ours_elems == their_elems


def test_text_is_escaped_and_escape_sequences_never_reach_the_page():
    cell = _notebook()["cells"][2]
    out = render_cell(cell, show_code=False)
    assert "<script>alert(1)</script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "\x1b" not in out
    assert '<span class="ansi-red-fg">red</span>' in out
    assert '<span class="ansi-green-intense-fg ansi-bold">ok</span>' in out
    assert "first\nsecond " in out and "joined" in out
    assert out.count('alt="No description has been provided for this image"') + out.count(
        "alt='No description has been provided for this image'") == 4  # html img, png, jpeg, svg
    assert ansi2html("a\x1b[38;2;1;2;3mb") == 'a<span style="color: rgb(1,2,3)">b</span>'
    # the one difference from nbconvert, on purpose: a script URL in markdown does not survive
    assert "javascript:" not in markdown2html("[x](javascript:alert(1)) ![y](file:///etc/passwd)")


def test_page_inlines_the_lab_stylesheets_and_no_remote_resource():
    html = page("t", "", ".ours{}", [])
    assert ".jp-Cell" in html and ".highlight .k" in html and "--jp-layout-color0" in html
    assert html.index(".jp-Cell") < html.index(".ours{}")  # ours come last and win
    assert not re.search(r"(src|href)=\"https?:", html)
