"""A small, offline accessibility and hygiene checker for the server-rendered pages (stdlib
``html.parser``): the things a template change most easily breaks."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}
SVG_SELF_CLOSING = {
    "rect",
    "line",
    "circle",
    "path",
    "polyline",
    "polygon",
    "ellipse",
    "stop",
    "use",
}


class PageChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.ids: Counter[str] = Counter()
        self.labels_for: set[str] = set()
        self.inputs: list[dict[str, str | None]] = []
        self.stack: list[str] = []
        self.html_lang: str | None = None
        self.h1 = 0
        self.tables = 0
        self.captions = 0
        self.th_without_scope = 0
        self.links: list[str] = []
        self.scripts = 0
        self.inline_styles = 0
        self.inline_handlers = 0
        self.imgs_without_alt = 0
        self.skip_link = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] += 1
        if "style" in a:
            self.inline_styles += 1
        if any(name.startswith("on") for name in a):
            self.inline_handlers += 1
        if tag == "html":
            self.html_lang = a.get("lang")
        elif tag == "script":
            self.scripts += 1
        elif tag == "h1":
            self.h1 += 1
        elif tag == "table":
            self.tables += 1
        elif tag == "caption":
            self.captions += 1
        elif tag == "th" and "scope" not in a:
            self.th_without_scope += 1
        elif tag == "label" and a.get("for"):
            self.labels_for.add(a["for"] or "")
        elif tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.inputs.append(a)
        elif tag == "img" and "alt" not in a:
            self.imgs_without_alt += 1
        elif tag == "a":
            self.links.append(a.get("href") or "")
            if a.get("href") == "#main" and not self.links[:-1]:
                self.skip_link = True
        if tag not in VOID and tag not in SVG_SELF_CLOSING:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID and tag not in SVG_SELF_CLOSING:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or tag in SVG_SELF_CLOSING:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(
                f"</{tag}> does not close <{self.stack[-1] if self.stack else '-'}>"
            )
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def check_page(html: str) -> PageChecker:
    """Parse a page and assert the basics; return the checker for page-specific checks."""
    page = PageChecker()
    page.feed(html)
    page.close()
    problems = list(page.problems)
    if page.stack:
        problems.append(f"unclosed: {page.stack}")
    if page.html_lang != "en-GB":
        problems.append(f"html lang is {page.html_lang!r}")
    if page.h1 != 1:
        problems.append(f"{page.h1} h1 elements")
    duplicates = [i for i, n in page.ids.items() if n > 1]
    if duplicates:
        problems.append(f"duplicate ids {duplicates}")
    for field in page.inputs:
        if not field.get("id") or field["id"] not in page.labels_for:
            problems.append(f"form field without a label: {field}")
    if page.tables != page.captions:
        problems.append("a table without a caption")
    if page.th_without_scope:
        problems.append(f"{page.th_without_scope} th without scope")
    if page.scripts or page.inline_styles or page.inline_handlers:
        problems.append("scripts, inline styles or inline event handlers")
    if page.imgs_without_alt:
        problems.append("an img without alt")
    if not page.skip_link or "main" not in page.ids:
        problems.append("no skip link to #main as the first link")
    external = [
        h
        for h in page.links
        if h.startswith(("http:", "https:"))
        and "nationalarchives.gov.uk" not in h
        and "open-contracting.org" not in h
    ]
    if external:
        problems.append(f"unexpected external links {external}")
    assert not problems, problems
    return page
