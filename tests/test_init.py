"""`slm init NAME --from LOG`: a domain folder from a log of hosted-LLM calls, checked by the platform itself.

The log is built here the way an application logs OpenAI calls: a dozen structured calls (response_format
json_schema), a dozen tool calls over two tools (both line shapes the `openai_chat` source reads), a key in
the headers, user ids and personal metadata, and bad lines of every kind. The real CLI runs in a subprocess;
the folder it writes must pass `slm validate`, load with the right roles and contracts, and feed the real
dataset stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import build_dataset, ingest_capture
from slm_platform.domain import Domain
from slm_platform.records import check_turn

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-proj-Zq8xW3vB7nM2kL5pR9tY1uI4oP6aS0dF"
USER_ID = "user_8812_janedoe"
EMAIL = "jane.doe.8812@example.com"

TRIAGE_PROMPT = "Triage the support ticket. Answer with JSON: category, priority, summary."
TRIAGE_PROMPT_OLD = "Classify this ticket (category, priority, summary) as JSON."
TOOLS_PROMPT = "You are a travel assistant. Use a tool to answer."

TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "account", "how_to"]},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "summary": {"type": "string", "maxLength": 120},
    },
    "required": ["category", "priority", "summary"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"], "additionalProperties": False}}}
FLIGHTS = {"type": "function", "function": {
    "name": "search_flights", "description": "Search flights between two cities on a date.",
    "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                                                    "date": {"type": "string"}},
                   "required": ["origin", "destination", "date"], "additionalProperties": False}}}

TICKETS = [
    ("I was charged twice for my subscription this month.", "billing", "high"),
    ("The app crashes when I open the settings page.", "bug", "high"),
    ("How do I change the language of the interface?", "how_to", "low"),
    ("I cannot log in since I reset my password.", "account", "medium"),
    ("Where can I download my invoices?", "billing", "low"),
    ("Export to PDF produces a blank file.", "bug", "medium"),
    ("Please add my colleague to our team account.", "account", "low"),
    ("Refund the annual plan, I cancelled within 14 days.", "billing", "medium"),
    ("Sync stopped working on my phone after the update.", "bug", "high"),
    ("How can I set up two-factor authentication?", "how_to", "low"),
    ("My account is locked after too many attempts.", "account", "high"),
    ("Is there a keyboard shortcut for search?", "how_to", "low"),
]
TRIPS = [
    ("What's the weather in Lisbon?", "get_weather", {"city": "Lisbon"}),
    ("Find me a flight from Paris to Rome on 2026-03-02.", "search_flights",
     {"origin": "Paris", "destination": "Rome", "date": "2026-03-02"}),
    ("Is it raining in Oslo right now? In celsius please.", "get_weather", {"city": "Oslo", "unit": "celsius"}),
    ("Flights Berlin to Madrid, March 10 2026", "search_flights",
     {"origin": "Berlin", "destination": "Madrid", "date": "2026-03-10"}),
    ("How hot is it in Austin in fahrenheit?", "get_weather", {"city": "Austin", "unit": "fahrenheit"}),
    ("I need to fly from Lyon to Nice on 2026-04-01", "search_flights",
     {"origin": "Lyon", "destination": "Nice", "date": "2026-04-01"}),
    ("Weather in Kyoto?", "get_weather", {"city": "Kyoto"}),
    ("Any flights Dublin -> London on 2026-05-05?", "search_flights",
     {"origin": "Dublin", "destination": "London", "date": "2026-05-05"}),
    ("Tell me the temperature in Cairo.", "get_weather", {"city": "Cairo"}),
    ("Search flights from Vienna to Prague for 2026-06-12.", "search_flights",
     {"origin": "Vienna", "destination": "Prague", "date": "2026-06-12"}),
    ("What's the forecast for Quebec in kelvin?", "get_weather", {"city": "Quebec", "unit": "kelvin"}),  # breaks the enum
    ("Weather in Porto", "get_weather", {"city": "Porto"}),
]


def structured_call(i: int, text: str, category: str, priority: str, prompt: str = TRIAGE_PROMPT) -> dict:
    answer = {"category": category, "priority": priority, "summary": text[:60]}
    return {
        "request": {
            "model": "gpt-4.1-mini",
            "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": text, "name": "Jane Doe"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "TicketTriage", "strict": True, "schema": TRIAGE_SCHEMA}},
            "user": USER_ID,
            "headers": {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        },
        "response": {"id": f"chatcmpl-triage{i:03d}", "object": "chat.completion", "created": 1767225600 + 60 * i,
                     "model": "gpt-4.1-mini-2025-04-14",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": json.dumps(answer), "refusal": None}}],
                     "usage": {"prompt_tokens": 52, "completion_tokens": 20, "total_tokens": 72}},
        "metadata": {"user_id": USER_ID, "email": EMAIL, "slice": {"channel": "email" if i % 2 else "chat"}},
        "api_key": API_KEY,
    }


def tool_call(i: int, text: str, name: str, args: dict) -> dict:
    message = {"role": "assistant", "content": None,
               "tool_calls": [{"id": f"call_{i:03d}", "type": "function",
                               "function": {"name": name, "arguments": json.dumps(args)}}]}
    if i % 2:  # the flat shape: request fields at the top, the completion merged in
        return {"model": "gpt-4.1-mini", "messages": [{"role": "system", "content": TOOLS_PROMPT},
                                                      {"role": "user", "content": text}],
                "tools": [WEATHER, FLIGHTS], "tool_choice": "auto", "user": USER_ID,
                "id": f"chatcmpl-tool{i:03d}", "created": 1767229200 + 60 * i,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    return {"request": {"model": "gpt-4.1-mini", "messages": [{"role": "system", "content": TOOLS_PROMPT},
                                                              {"role": "user", "content": text}],
                        "tools": [WEATHER, FLIGHTS], "tool_choice": "auto",
                        "headers": {"authorization": f"Bearer {API_KEY}"}},
            "response": {"id": f"chatcmpl-tool{i:03d}", "created": 1767229200 + 60 * i, "model": "gpt-4.1-mini",
                         "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}}


def build_log(path: Path) -> dict:
    """The log file, and what `slm init` must make of it (line numbers are 1-based)."""
    lines: list[str] = []
    expect = {"bad": {}, "triage_lines": [], "tool_lines": []}

    def add(obj_or_text, bucket=None, kind=None) -> None:
        lines.append(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text))
        n = len(lines)
        if bucket:
            expect[bucket].append(n)
        if kind:
            expect["bad"][n] = kind

    for i, (text, category, priority) in enumerate(TICKETS):
        prompt = TRIAGE_PROMPT_OLD if i == 5 else TRIAGE_PROMPT  # one call from before a prompt change
        add(structured_call(i, text, category, priority, prompt), "triage_lines")
        name, args = TRIPS[i][1], TRIPS[i][2]
        if args.get("unit") == "kelvin":
            add(tool_call(i, TRIPS[i][0], name, args), kind="bad_answer")  # valid line, answer outside the catalog
        else:
            add(tool_call(i, TRIPS[i][0], name, args), "tool_lines")
    add('{"request": {"messages": [{"role": "user", "content": "hi"}], "headers": {"Authorization": "Bearer '
        + API_KEY + '"', kind="not_json")  # cut off mid-line, the key inside
    no_response = structured_call(90, "Where is my order?", "how_to", "low")
    no_response["response"] = None
    add(no_response, kind="no_response")
    failed = structured_call(91, "Cancel my plan", "billing", "low")
    failed["response"] = {"error": {"message": "rate limited", "type": "rate_limit_error"}}
    add(failed, kind="no_response")
    add({"request": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "Write me a haiku"}]},
         "response": {"id": "chatcmpl-free", "created": 1767229999,
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Autumn moonlight..."}}]}},
        kind="no_contract")
    add("", kind="blank")
    add([1, 2, 3], kind="not_a_call")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expect["total"] = len(lines)
    return expect


def slm(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm_platform.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("init")
    log = tmp / "openai_calls.jsonl"
    expect = build_log(log)
    folder = tmp / "domains" / "helpdesk"
    proc = slm("init", str(folder), "--from", str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder, expect, proc


def test_init_prints_counts_that_add_up(scaffolded) -> None:
    folder, expect, proc = scaffolded
    kept = len(expect["triage_lines"]) + len(expect["tool_lines"])
    assert kept == 23 and len(expect["bad"]) == 7 and expect["total"] == 30
    assert f"read 30 lines of openai_calls.jsonl: {kept} calls kept, 7 rejected" in proc.stdout, proc.stdout
    for line in expect["bad"]:
        assert f"  line {line}: " in proc.stdout
    assert "2 different system prompts" in proc.stdout  # the one call with the old prompt is reported
    assert "dataset gate" in proc.stdout  # 23 calls are below data.min_rows


def test_files_and_contracts(scaffolded) -> None:
    folder, expect, _ = scaffolded
    names = set(tree_digest(folder))
    assert names == {
        "slm.config.yaml", "oracle.py", "simulate.py", "README.md",
        "prompts/ticket_triage.md", "prompts/get_weather_or_search_flights.md",
        "contracts/ticket_triage.output.json", "contracts/get_weather_or_search_flights.tools.json",
        "data/seed.ticket_triage.jsonl", "data/seed.get_weather_or_search_flights.jsonl", "data/rejected.jsonl",
    }, names
    assert json.loads((folder / "contracts/ticket_triage.output.json").read_text()) == TRIAGE_SCHEMA
    catalog = json.loads((folder / "contracts/get_weather_or_search_flights.tools.json").read_text())
    assert catalog == [WEATHER, FLIGHTS]
    assert (folder / "prompts/ticket_triage.md").read_text().strip() == TRIAGE_PROMPT  # the most common one
    assert (folder / "prompts/get_weather_or_search_flights.md").read_text().strip() == TOOLS_PROMPT
    assert len(read_jsonl(folder / "data/seed.ticket_triage.jsonl")) == len(expect["triage_lines"])
    assert len(read_jsonl(folder / "data/seed.get_weather_or_search_flights.jsonl")) == len(expect["tool_lines"])
    config = yaml.safe_load((folder / "slm.config.yaml").read_text())
    assert config["domain"]["name"] == "helpdesk"
    assert [(r["id"], r["kind"], r["oracle"]) for r in config["contract"]["roles"]] == [
        ("ticket_triage", "structured", "oracle:ticket_triage"),
        ("get_weather_or_search_flights", "tool_call", "oracle:get_weather_or_search_flights")]
    assert {s["format"] for s in config["data"]["sources"]} == {"openai_chat"}
    assert config["eval"]["floor"] == "oracle"
    assert config["serving"]["routes"] == {"ticket_triage": "slm", "get_weather_or_search_flights": "slm"}


def test_rejected_lines_have_reasons(scaffolded) -> None:
    folder, expect, _ = scaffolded
    rows = read_jsonl(folder / "data/rejected.jsonl")
    assert {r["line"]: r["kind"] for r in rows} == expect["bad"]
    assert all(r["reason"] for r in rows)
    kelvin = next(r for r in rows if r["kind"] == "bad_answer")
    assert "get_weather" in kelvin["reason"] and "unit" in kelvin["reason"]


def test_validate_passes(scaffolded) -> None:
    folder, _, _ = scaffolded
    proc = slm("validate", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout and "(23 rows)" in proc.stdout, proc.stdout


def test_domain_loads_with_its_roles(scaffolded) -> None:
    folder, _, _ = scaffolded
    domain = Domain.load(folder)
    assert domain.name == "helpdesk"
    assert {rid: c.kind for rid, c in domain.roles.items()} == {
        "ticket_triage": "structured", "get_weather_or_search_flights": "tool_call"}
    assert domain.role("ticket_triage").output_schema == TRIAGE_SCHEMA
    assert set(domain.role("get_weather_or_search_flights").tool_parameters()) == {"get_weather", "search_flights"}
    assert domain.role("ticket_triage").oracle({"messages": [{"role": "user", "content": "x"}]}) is None  # the stub


def test_dataset_stage_reads_the_seed(scaffolded, tmp_path: Path) -> None:
    folder, expect, _ = scaffolded
    domain = Domain.load(folder)
    result = build_dataset(domain, ArtifactStore(str(tmp_path / "artifacts")), "v0001", progress=False)
    stats = result.stats
    assert stats["rows_in"] == len(expect["triage_lines"]) + len(expect["tool_lines"]), stats
    assert stats["quarantined_total"] == 0, stats
    assert result.checks["labels_valid"]["passed"] and result.checks["rows_conserved"]["passed"], result.checks
    assert not result.checks["min_rows"]["passed"]  # 23 calls: the gate the init output warned about
    published = ArtifactStore(str(tmp_path / "artifacts")).open_verified("helpdesk/datasets/v0001")
    rows = [r for split in ("train", "val", "test") for r in read_jsonl(published / f"{split}.jsonl")]
    by_role = {role: sum(r["role"] == role for r in rows) for role in domain.roles}
    assert by_role["ticket_triage"] + by_role["get_weather_or_search_flights"] == len(rows) > 0
    assert all(r["label_source"] == "capture" for r in rows)
    assert all(r["input"]["messages"][0]["role"] == "user" for r in rows)  # the system prompt lives in prompts/


def test_simulator_replays_the_seed_into_the_capture_stage(scaffolded, tmp_path: Path) -> None:
    folder, _, _ = scaffolded
    domain = Domain.load(folder)
    turns = list(domain.simulator().simulate(30, seed=1, day="2026-02-01"))
    assert len(turns) == 30 and len({t["id"] for t in turns}) == 30
    assert {t["role"] for t in turns} == set(domain.roles)
    for t in turns:
        check_turn(t, domain="helpdesk", roles=domain.roles)
        assert t["meta"]["captured_at"].startswith("2026-02-01")
        assert domain.role(t["role"]).validate_output(t["labels"]["capture"]) == []
    day = tmp_path / "inbox" / "date=2026-02-01"  # what `slm run` does with an empty capture day
    day.mkdir(parents=True)
    (day / "simulated.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns))
    result = ingest_capture(domain, "2026-02-01", ArtifactStore(str(tmp_path / "artifacts")), inbox=tmp_path / "inbox")
    assert result.stats["kept"] == 30 and result.stats["quarantined"] == 0, result.stats
    assert all(c["passed"] for c in result.checks.values()), result.checks


def test_no_secret_and_no_user_id_is_written(scaffolded) -> None:
    folder, _, _ = scaffolded
    texts = {rel: (folder / rel).read_text(encoding="utf-8") for rel in tree_digest(folder)}
    assert any(API_KEY[:12] in line for line in Path(folder.parent.parent / "openai_calls.jsonl").read_text().splitlines())
    for rel, text in texts.items():
        assert API_KEY not in text and API_KEY[3:20] not in text, rel
    for rel in ("slm.config.yaml", "README.md", "oracle.py", "data/seed.ticket_triage.jsonl",
                "data/seed.get_weather_or_search_flights.jsonl", "data/rejected.jsonl"):
        assert USER_ID not in texts[rel] and EMAIL not in texts[rel] and "Jane Doe" not in texts[rel], rel
    seed = read_jsonl(folder / "data/seed.ticket_triage.jsonl")
    assert all(set(row) <= {"request", "response", "metadata"} for row in seed)
    assert all(row["metadata"] == {"slice": {"channel": row["metadata"]["slice"]["channel"]}} for row in seed)


def test_an_existing_folder_is_refused(scaffolded) -> None:
    folder, _, _ = scaffolded
    before = tree_digest(folder)
    proc = slm("init", str(folder), "--from", str(folder.parent.parent / "openai_calls.jsonl"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "already exists" in proc.stderr and "nothing written" in proc.stderr
    assert tree_digest(folder) == before


def test_conflicting_schemas_are_refused_with_their_lines(tmp_path: Path) -> None:
    calls = [structured_call(i, t, c, p) for i, (t, c, p) in enumerate(TICKETS[:4])]
    changed = copy.deepcopy(calls[2])
    changed["request"]["response_format"]["json_schema"]["schema"]["properties"]["team"] = {"type": "string"}
    calls[2] = changed
    log = tmp_path / "calls.jsonl"
    log.write_text("".join(json.dumps(c) + "\n" for c in calls))
    proc = slm("init", str(tmp_path / "conflict"), "--from", str(log))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"TicketTriage" has 2 different schemas' in proc.stderr, proc.stderr
    assert "variant 1 on lines 1, 2, 4; variant 2 on line 3" in proc.stderr, proc.stderr
    assert not (tmp_path / "conflict").exists()


def test_a_bare_name_goes_to_the_domains_folder(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    log.write_text("".join(json.dumps(structured_call(i, t, c, p)) + "\n" for i, (t, c, p) in enumerate(TICKETS)))
    proc = slm("init", "triage_only", "--from", str(log), env={"SLM_DOMAINS": str(tmp_path / "doms")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    domain = Domain.load(tmp_path / "doms" / "triage_only")
    assert list(domain.roles) == ["ticket_triage"]
    config = yaml.safe_load((tmp_path / "doms" / "triage_only" / "slm.config.yaml").read_text())
    assert config["data"]["sources"] == [{"name": "seed", "format": "openai_chat", "path": "data/seed.jsonl",
                                          "role": "ticket_triage"}]
    assert not (tmp_path / "doms" / "triage_only" / "data" / "rejected.jsonl").exists()
    assert "12 calls kept, 0 rejected" in proc.stdout


def test_a_log_without_a_usable_call_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    free = {"messages": [{"role": "user", "content": "hello"}],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}}]}
    log.write_text("not json\n" + json.dumps(free) + "\n")
    proc = slm("init", str(tmp_path / "empty"), "--from", str(log))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no usable call in 2 lines" in proc.stderr and "line 1: not valid JSON" in proc.stderr, proc.stderr
    assert "line 2: neither response_format" in proc.stderr, proc.stderr
    assert not (tmp_path / "empty").exists()
    missing = slm("init", str(tmp_path / "other"), "--from", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "no such file" in missing.stderr, missing.stderr


def test_a_simulated_call_log_of_a_shipped_domain_scaffolds_it_back(tmp_path: Path) -> None:
    """`slm simulate travel --format openai_chat` writes the log an application kept (structured calls with
    response_format, tool calls with tools + tool_calls, slots in the user message as the renderer shows them);
    `slm init` makes a valid domain of it whose contracts are travel's and whose seed rows read back as the
    simulator's answers."""
    from slm_platform.data.sources import read_source

    travel = Domain.load(ROOT / "domains" / "travel")
    log = tmp_path / "calls.jsonl"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "slm_platform.cli", "simulate", str(ROOT / "domains" / "travel"),
                               "--n", "60", "--seed", "4", "--format", "openai_chat"], stdout=f, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    turns = list(travel.simulator().simulate(60, seed=4))
    lines = read_jsonl(log)
    assert len(lines) == 60 and all(line["request"]["model"] == "gpt-4.1-mini" for line in lines)

    folder = tmp_path / "domains" / "trips"
    proc = slm("init", str(folder), "--from", str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "60 calls kept, 0 rejected" in proc.stdout
    assert slm("validate", str(folder)).returncode == 0
    trips = Domain.load(folder)
    tool_role = next(r for r in trips.roles.values() if r.kind == "tool_call")
    assert trips.roles["plan_turn"].output_schema == travel.roles["plan_turn"].output_schema
    assert tool_role.tools == travel.roles["call_tool"].tools
    by_role = {"plan_turn": "plan_turn", tool_role.id: "call_tool"}
    for role, source in by_role.items():
        read = list(read_source(folder / "data" / f"seed.{role}.jsonl", "openai_chat", domain="trips", source="seed",
                                role=role))
        assert all(isinstance(row, dict) for row in read), [r for r in read if not isinstance(r, dict)][:3]
        assert [row["output"] for row in read] == [t["output"] for t in turns if t["role"] == source], role
