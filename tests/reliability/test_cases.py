"""The table-driven reliability cases (``cases_*.py``), each run through the real CLI in a subprocess
(see ``harness.py`` for what every case is judged on)."""

from __future__ import annotations

import pytest

from tests.reliability.cases_folders import CASES as FOLDERS
from tests.reliability.cases_inputs import CASES as INPUTS
from tests.reliability.cases_outputs import CASES as OUTPUTS
from tests.reliability.cases_packages import CASES as PACKAGES
from tests.reliability.cases_provenance import CASES as PROVENANCE
from tests.reliability.cases_training import CASES as TRAINING
from tests.reliability.cases_usage import CASES as USAGE
from tests.reliability.harness import Case, record

ALL: list[Case] = [*INPUTS, *FOLDERS, *OUTPUTS, *PROVENANCE, *PACKAGES, *USAGE, *TRAINING]
ALL.sort(key=lambda c: c.serial)  # the timing-sensitive cases last, when nothing else runs


def test_case_ids_are_unique_and_described():
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert all(c.what and c.category and c.area for c in ALL)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_case(case: Case, case_pool):
    outcome = case_pool.outcome(case)
    record(outcome)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.passed, outcome.report(case.message)
