"""Drift of a tool-calling role (travel's `call_tool`): new destinations show up as values never seen
in training. Real dataset stage, capture stage, simulator and MiniLM; only the one role is measured
(`compare_role`), to keep the embedding work small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import build_dataset
from slm_platform.domain import Domain
from slm_platform.drift import default_embedder
from slm_platform.drift.inputs import ReferenceLoader, load_capture_day
from slm_platform.drift.report import UNSEEN_THRESHOLD
from slm_platform.drift.roles import compare_role
from test_drift import capture  # tests/test_drift.py

ROOT = Path(__file__).resolve().parent.parent
ROLE = "call_tool"


@pytest.fixture(scope="module")
def travel(tmp_path_factory):
    root = tmp_path_factory.mktemp("travel-drift")
    store = ArtifactStore(root / "artifacts")
    domain = Domain.load(ROOT / "domains" / "travel")
    capture(domain, store, root / "inbox", "2026-11-19", 300, 0.0, seed=3)
    build_dataset(domain, store, "v0001", progress=False)  # seed file + that day: ~200 call_tool turns in train
    capture(domain, store, root / "inbox", "2026-11-20", 240, 0.0)
    capture(domain, store, root / "inbox", "2026-11-21", 240, 1.0)
    reference = ReferenceLoader(domain, store).for_role(ROLE)
    contract = domain.role(ROLE)
    embed = default_embedder().encode

    def drift_of(day: str):
        turns = load_capture_day(domain, day, store).by_role[ROLE]
        return compare_role(contract, reference, turns, embed, np.random.default_rng(0))

    return drift_of("2026-11-20"), drift_of("2026-11-21")


@pytest.mark.integration
def test_new_destinations_are_unseen_values_of_the_tool_call(travel):
    calm, drifted = travel
    assert calm.kind == "tool_call" and calm.status == "ok" and drifted.status == "ok"
    keys = {s.key: s for s in drifted.slices}
    assert "output.name" in keys  # the tool called is a categorical key of a tool role
    destination = keys["output.arguments.destination"]
    assert destination.unseen_share.value > UNSEEN_THRESHOLD and destination.js.drifted
    assert set(destination.unseen_values) <= {"Tbilisi", "Da Nang", "Medellin", "Tirana", "Almaty", "Oaxaca",
                                              "Cape Town", "Reykjavik", "Marrakesh", "Hanoi"}
    assert drifted.unseen_share.drifted and drifted.unseen_share.value > 0.2
    assert any(r.startswith("unseen share") for r in drifted.reasons)
    # undrifted traffic names no destination, tool or category that training lacks
    assert not calm.unseen_share.drifted and calm.unseen_share.value < UNSEEN_THRESHOLD, calm.unseen_share
    assert all(s.unseen_share.value == 0 for s in calm.slices if s.key.startswith("output."))
    # the oracle's city list does not know the new destinations: it abstains on them
    assert drifted.oracle_disagreement.n < calm.oracle_disagreement.n
