"""The glossary behind ``poisonsim run --explain`` and docs/glossary.md: one source, and every printed row in it."""

from __future__ import annotations

from conftest import ROOT

import poisonsim
from poisonsim.cli import summary_rows
from poisonsim.evaluation.glossary import GLOSSARY, markdown


def test_the_docs_page_is_the_glossary():
    assert (
        markdown() in (ROOT / "docs" / "glossary.md").read_text()
    )  # regenerate: python -m poisonsim.evaluation.glossary


def test_every_row_a_run_prints_has_its_unit_and_definition():
    """A defended detector run and a deployed classifier run: each row shown comes with its definition."""
    for scenario, n_events in (("centroid_defended.toml", 3_000), ("front_running.toml", 4_000)):
        summary = poisonsim.run(ROOT / "scenarios" / scenario, [f"stream.n_events={n_events}"]).summary
        rows = summary_rows(summary)
        assert len(rows) >= 12
        for name, value, meaning in rows:
            unit, _, definition = meaning.partition(": ")
            assert unit and len(definition) > 10, name
    assert all(figure.unit and figure.definition for figure in GLOSSARY.values())
