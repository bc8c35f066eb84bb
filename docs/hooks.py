"""The site's generated parts, filled in when mkdocs builds it: each ``<!-- poisonsim: ... -->`` marker of a
page becomes the tables it names, computed from the code or the benchmarks' data files, so they cannot drift.

- ``<!-- poisonsim: kinds CONCEPT -->``: every registered kind of CONCEPT and its keys (the registry);
- ``<!-- poisonsim: readme -->``: the README, its links made the site's (the home page).

The docstrings of the API reference cross-reference in Sphinx's roles (``:class:`Scenario```); the rendered
pages keep the name, as code, without the role.

The glossary's and the benchmarks' tables are pages of their own that tests keep equal to their sources.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = re.compile(r"<!-- poisonsim: (\w+) ?([\w-]*) -->")
ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc):(?=<code>)")


def _expand(match: re.Match) -> str:
    what, argument = match.groups()
    if what == "kinds":
        from poisonsim.kinds_cli import kinds_markdown

        return kinds_markdown(argument)
    if what == "readme":
        text = (Path(__file__).parents[1] / "README.md").read_text()
        for outside, inside in (("](docs/", "]("), ("](CONTRIBUTING.md)", "](contributing.md)")):
            text = text.replace(outside, inside)
        return text.replace("](CHANGELOG.md)", "](changelog.md)")
    raise ValueError(f"unknown marker {match.group(0)}")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(_expand, markdown)


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub("", html)
