"""EvalSession takes its generation settings from the domain config (no engine needed: the oracle)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals import session as session_module
from slm_platform.evals.session import EvalSession
from slm_platform.models.spec import ModelSpec

ROOT = Path(__file__).resolve().parent.parent


def test_domain_eval_settings_reach_the_predictor(tmp_path, monkeypatch):
    domain = Domain.load(ROOT / "domains" / "travel")
    turns = list(domain.simulator().simulate(6, seed=3))
    opened = []
    real_open = session_module.open_predictor

    @contextlib.contextmanager
    def spy(spec, **kw):
        opened.append((spec, kw))
        with real_open(spec, **kw) as predictor:
            yield predictor

    monkeypatch.setattr(session_module, "open_predictor", spy)
    session = EvalSession("travel sample", turns, lambda t: domain.role(t["role"]), None, [ModelSpec.oracle()], domain=domain,
                          store=ArtifactStore(tmp_path), **EvalSession._domain_defaults(domain))
    results = session.run()
    (spec, kw), = opened
    assert spec == ModelSpec.oracle() and kw["max_tokens"] == domain.config.eval.max_tokens == 384
    assert kw["max_model_len"] >= domain.config.model.recipe.max_seq_len + kw["max_tokens"]  # prompt + answer fit
    assert len(results[ModelSpec.oracle()].rows) == len(turns)
