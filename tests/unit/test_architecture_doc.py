"""docs/ARCHITECTURE.md cannot drift from the code it describes."""

from __future__ import annotations

import re

from goodfellaz17.domain.states import TRANSITIONS, TaskStatus
from goodfellaz17.settings import Settings
from tests.deploy_manifests import ROOT

DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def test_the_transition_table_is_the_domain_transition_table() -> None:
    rows = re.findall(r"^\| ([A-Z_]+) → ([A-Z_]+) \|", DOC, flags=re.MULTILINE)
    documented = [(TaskStatus(a), TaskStatus(b)) for a, b in rows]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(TRANSITIONS)


def test_every_variable_named_is_a_real_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    named = set(re.findall(r"GOODFELLAZ17_([A-Z0-9_]+[A-Z0-9])", DOC))
    assert named, "the document names its settings"
    assert named - fields == set()
