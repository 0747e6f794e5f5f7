"""The shipped domain `domains/support_triage`: config, contract, oracle, simulator and seed set."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slm_platform.domain import Domain
from slm_platform.records import Turn

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "domains" / "support_triage"
FIELDS = ("category", "priority", "product", "needs_human", "language")


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(FOLDER)


@pytest.fixture(scope="module")
def sim(domain):
    return domain.simulator()


@pytest.fixture(scope="module")
def traffic(sim) -> list[dict]:
    return list(sim.simulate(20_000, seed=11, day="2026-11-21"))


def _text(turn: dict) -> str:
    return turn["input"]["messages"][0]["content"]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def test_domain_loads(domain):
    assert domain.name == "support_triage"
    role = domain.role("triage")
    assert role.kind == "structured"
    assert role.oracle is not None
    schema = role.output_schema
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(FIELDS) == set(schema["properties"])
    cfg = domain.config
    assert cfg.eval.primary_metric == "exact_match_rate"
    assert cfg.data.split.stratify == ["category"]
    assert [s.path for s in cfg.data.sources] == ["data/seed.jsonl"]


def test_simulated_turns_have_the_capture_shape_and_valid_outputs(domain, traffic):
    role = domain.role("triage")
    ids = set()
    for turn in traffic[:2000]:
        assert turn["domain"] == "support_triage" and turn["role"] == "triage"
        assert role.validate_output(turn["output"]) == []
        assert turn["labels"] == {"capture": turn["output"]}
        assert turn["meta"]["source"] == "simulated"
        assert turn["meta"]["captured_at"].startswith("2026-11-21T") and turn["meta"]["captured_at"].endswith("Z")
        assert {"category", "language", "multi_issue", "channel"} <= set(turn["meta"]["slice"])
        assert turn["meta"]["slice"]["category"] == turn["output"]["category"]
        assert turn["meta"]["slice"]["language"] == turn["output"]["language"]
        Turn.model_validate(turn)
        ids.add(turn["id"])
    assert len(ids) == 2000
    # every output of the whole run validates, and every label value occurs
    seen = collections.defaultdict(set)
    for turn in traffic:
        for f in FIELDS:
            seen[f].add(turn["output"][f])
    props = role.output_schema["properties"]
    for f in FIELDS:
        expected = set(props[f]["enum"]) if "enum" in props[f] else {True, False}
        assert seen[f] == expected, f


def test_oracle_is_valid_and_an_imperfect_floor(domain, traffic):
    role = domain.role("triage")
    sample = traffic[:2000]
    exact = 0
    per_field = collections.Counter()
    for turn in sample:
        out = role.oracle(turn["input"])
        assert role.validate_output(out) == [], out
        exact += out == turn["output"]
        for f in FIELDS:
            per_field[f] += out[f] == turn["output"][f]
    rate = exact / len(sample)
    assert 0.30 <= rate <= 0.70, rate
    for f in FIELDS:
        assert 0.5 <= per_field[f] / len(sample) <= 0.97, (f, per_field[f] / len(sample))
    # odd inputs still get a schema-valid default
    for odd in ({}, {"messages": []}, {"messages": [{"role": "user", "content": ""}]}, {"messages": "x"}):
        assert role.validate_output(role.oracle(odd)) == []


def test_simulate_is_deterministic_per_seed(sim):
    a = list(sim.simulate(300, seed=3))
    b = list(sim.simulate(300, seed=3))
    c = list(sim.simulate(300, seed=4))
    strip = [{k: v for k, v in t.items() if k != "meta"} | {"slice": t["meta"]["slice"]} for t in a]
    assert strip == [{k: v for k, v in t.items() if k != "meta"} | {"slice": t["meta"]["slice"]} for t in b]
    assert [_text(t) for t in a] != [_text(t) for t in c]
    assert {t["id"] for t in a}.isdisjoint(t["id"] for t in c)
    # with a day, the whole turn is reproducible, and two days differ
    d1 = list(sim.simulate(200, seed=3, day="2026-11-21"))
    assert d1 == list(sim.simulate(200, seed=3, day="2026-11-21"))
    d2 = list(sim.simulate(200, seed=3, day="2026-11-22"))
    assert [_text(t) for t in d1] != [_text(t) for t in d2]
    stamps = [t["meta"]["captured_at"] for t in d1]
    assert stamps == sorted(stamps) and all(s.startswith("2026-11-21T") for s in stamps)


def test_duplicates_at_the_stated_rates(sim, traffic):
    n = len(traffic)
    by_id = {t["id"]: t for t in traffic}
    kinds = collections.Counter((t["meta"].get("simulation") or {}).get("kind") for t in traffic)
    assert abs(kinds["exact"] / n - sim.EXACT_DUP_RATE) < 0.008, kinds
    assert abs(kinds["near"] / n - sim.NEAR_DUP_RATE) < 0.01, kinds
    # exact re-sends repeat the text; a few short tickets also coincide naturally
    seen, repeats = set(), 0
    for t in traffic:
        repeats += _text(t) in seen
        seen.add(_text(t))
    assert sim.EXACT_DUP_RATE <= repeats / n <= sim.EXACT_DUP_RATE + 0.025, repeats / n

    def shingles(text: str) -> set:
        w = text.split()
        return {tuple(w[i:i + 3]) for i in range(max(1, len(w) - 2))}

    sims = []
    for t in traffic:
        info = t["meta"].get("simulation")
        if not info:
            continue
        src = by_id[info["duplicate_of"]]
        assert src["output"] == t["output"] and "simulation" not in src["meta"]
        if info["kind"] == "exact":
            assert _text(src) == _text(t)
        else:
            assert _text(src) != _text(t)
            a, b = shingles(_text(t)), shingles(_text(src))
            sims.append(len(a & b) / len(a | b))
    sims.sort()
    assert sims[len(sims) // 2] >= 0.75, sims[len(sims) // 2]


def test_drift_moves_the_distribution(sim):
    base = list(sim.simulate(5000, seed=5, drift=0.0))
    drifted = list(sim.simulate(5000, seed=5, drift=1.0))

    def dist(turns, key):
        c = collections.Counter(str(t["meta"]["slice"].get(key, t["output"].get(key))) for t in turns)
        return {k: v / len(turns) for k, v in c.items()}

    def tvd(p, q):
        return 0.5 * sum(abs(p.get(k, 0) - q.get(k, 0)) for k in set(p) | set(q))

    assert tvd(dist(base, "product"), dist(drifted, "product")) > 0.25
    assert tvd(dist(base, "category"), dist(drifted, "category")) > 0.05
    non_en = [sum(t["output"]["language"] != "en" for t in ts) / len(ts) for ts in (base, drifted)]
    assert non_en[1] - non_en[0] > 0.15, non_en
    with pytest.raises(ValueError):
        next(sim.simulate(1, drift=1.5))


def test_tickets_carry_pii_and_order_numbers(traffic):
    texts = [_text(t) for t in traffic[:5000]]
    joined = "\n".join(texts)
    assert len(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", joined)) > 100
    assert len(re.findall(r"(?i)my name is [A-Z]|regards,\n[A-Z]", joined)) > 100
    assert len(re.findall(r"\+\d{1,2} \d|\(\d{3}\) 555-", joined)) > 100
    assert len(re.findall(r"#\d{5}\b", joined)) > 20
    cards = re.findall(r"\b(?:\d{4}[ -]?){3}\d{4}\b", joined)
    assert len(cards) > 10
    assert all(_luhn_ok(re.sub(r"\D", "", c)) for c in cards)
    languages = collections.Counter(t["output"]["language"] for t in traffic)
    assert 0.08 <= 1 - languages["en"] / len(traffic) <= 0.25
    multi = sum(t["meta"]["slice"]["multi_issue"] for t in traffic) / len(traffic)
    assert 0.07 <= multi <= 0.17


def test_seed_set_is_gold_labeled_turns(domain):
    role = domain.role("triage")
    lines = (FOLDER / "data" / "seed.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400
    categories = collections.Counter()
    for line in lines:
        turn = Turn.model_validate(json.loads(line))
        assert turn.domain == "support_triage" and turn.role == "triage"
        assert turn.labels.gold is not None and turn.labels.capture is None
        assert role.validate_output(turn.labels.gold) == []
        categories[turn.labels.gold["category"]] += 1
    assert len(categories) == 7 and min(categories.values()) >= 10


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "t.jsonl"
    cmd = [sys.executable, str(FOLDER / "simulate.py"), "--n", "25", "--seed", "1", "--day", "2026-11-21",
           "--drift", "0.3", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=60)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 25 and all(r["meta"]["captured_at"].startswith("2026-11-21") for r in rows)
    gold = subprocess.run(cmd[:-2] + ["--gold"], check=True, timeout=60, capture_output=True, text=True).stdout
    first = json.loads(gold.splitlines()[0])
    assert "gold" in first["labels"] and "capture" not in first["labels"]
