"""HTML to plain text: tags removed, scripts and styles dropped, entities decoded. Pure."""

from __future__ import annotations

import html
import html.parser
import re
import unicodedata

_BLOCK = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
     "blockquote", "section", "article", "header", "footer", "pre"}
)  # fmt: skip
_DROP = frozenset({"script", "style", "noscript", "iframe", "svg", "head", "template"})
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_LINES = re.compile(r"\s*\n\s*")
# Control and invisible format characters (not newline and tab, which are whitespace).
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060\ufeff]"
)


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            self._dropping += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP:
            self._dropping = max(0, self._dropping - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.parts.append(data)


def clean_html(raw: str) -> str:
    """Readable text: paragraphs kept as single newlines, whitespace collapsed, NFC."""
    parser = _Text()
    parser.feed(raw)
    parser.close()
    text = html.unescape("".join(parser.parts))
    text = unicodedata.normalize("NFC", text).replace("\r", "")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return _LINES.sub("\n", text).strip()


def one_line(text: str) -> str:
    return " ".join(text.split())
