"""The docs' tables of scenario fields, defaults and bounds match the schema."""

from __future__ import annotations

import pytest

from agents.consensus.duals import DualConfig
from agents.control.epos.controller import EposConfig
from cosim.scenario import doc_tables
from cosim.scenario.controller import CONTROLLER_KIND_FIELDS
from cosim.scenario.coordination import DualsConfig


def test_committed_tables_match_the_schema():
    assert doc_tables.stale() == [], "run: python -m cosim.scenario.doc_tables"
    assert doc_tables.main(["--check"]) == 0


def test_every_table_is_in_some_file():
    text = "".join((doc_tables._ROOT / f).read_text() for f in doc_tables.DOC_FILES)
    for name in doc_tables.TABLES:
        assert f"<!-- fields:{name}:start -->" in text


def test_a_changed_default_makes_the_tables_stale(monkeypatch):
    text = (doc_tables._ROOT / "docs" / "running.md").read_text()
    monkeypatch.setitem(doc_tables.TABLES, "duals", lambda: "| changed |")
    assert doc_tables.render(text) != text
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        doc_tables.render("<!-- fields:nope:start -->\n<!-- fields:nope:end -->")


def test_the_schema_takes_the_domain_defaults():
    assert DualsConfig().model_dump() == {
        name: getattr(DualConfig(), name) for name in DualsConfig.model_fields}
    assert CONTROLLER_KIND_FIELDS["epos_alpha"][1] == EposConfig().alpha == 0.0
    assert CONTROLLER_KIND_FIELDS["epos_beta"][1] == EposConfig().beta == 0.1


def test_the_reference_page_names_every_scenario_field():
    from cosim.scenario.model import Scenario
    text = (doc_tables._ROOT / "docs" / "scenario_reference.md").read_text()
    assert "<!-- fields:reference:start -->" in text
    rows = doc_tables._reference_rows(Scenario, "")
    assert {r[0].split(".")[0] for r in rows} == set(Scenario.model_fields)
    for path, *_ in rows:
        assert f"| `{path}` |" in text
    assert "| `duals.alpha` | `0.1` | >= 0 | float; step of lambda |" in text
