"""Every row of the shared invalid-manifest table is rejected offline, naming its field."""

from __future__ import annotations

import pytest
from tmo.api import check_manifest

from tests.api.invalid_cases import BASE_MODEL, BASE_ROLLOUT, CASES, InvalidCase


def test_bases_are_valid() -> None:
    assert check_manifest(BASE_MODEL) == []
    assert check_manifest(BASE_ROLLOUT) == []


def test_table_is_big_and_ids_unique() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rejected_offline_naming_the_field(case: InvalidCase) -> None:
    problems = check_manifest(case.manifest)
    assert problems, "accepted offline"
    assert any(p.field.startswith(case.path) for p in problems), problems
    assert all(p.message for p in problems)
