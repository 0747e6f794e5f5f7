"""Known PII values and the byte forms a leak of them could take on disk (shared by the PII tests).

Every value is one the redactor finds (a name only after a cue word). `NEEDLES` are the pieces a
grep looks for: the values and their telling fragments (a surname, the digits of a phone or card
without spaces), so a half-redacted value is caught too.
"""

from __future__ import annotations

import json

PII = {
    "email": "gwendolyn.rutherford@example.org",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "203.0.113.77",
    "person": "Gwendolyn Rutherford",  # found after a cue: "my name is Gwendolyn Rutherford"
    "person_accented": "Éloïse Brontë-Zoëlle",  # non-ASCII: written as UTF-8 or as \\u escapes
}
CUE = f"my name is {PII['person']}"
CUE_ACCENTED = f"my name is {PII['person_accented']}"
CARD_NUMBER = 4111111111111111  # the card as a JSON number

NEEDLES = [
    PII["email"], "gwendolyn.rutherford", "Gwendolyn", "Rutherford",
    PII["phone"], "7946 0958", "79460958",
    PII["card"], "4111111111111111", "4111 1111", "4111-1111",
    PII["iban"], "DE89 3704", "DE89370400", "0532 0130",
    PII["ip"], "203.0.113",
    "Éloïse", "Brontë", "Zoëlle",
]


def forms(needle: str) -> set[bytes]:
    """The ways `needle` can appear in a file: UTF-8, JSON-escaped (ASCII \\u escapes), and escaped twice
    (JSON inside a JSON string, as Dagster's event log stores metadata)."""
    once = json.dumps(needle)[1:-1]
    twice = json.dumps(once)[1:-1]
    texts = {needle, once, twice, json.dumps(needle, ensure_ascii=False)[1:-1]}
    return {t.encode("utf-8") for t in texts} | {needle.encode("utf-16-le")}


FORMS = {needle: forms(needle) for needle in NEEDLES}


def leaks(data: bytes | str) -> list[str]:
    """The needles found in `data` (any of their forms)."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    return [needle for needle, variants in FORMS.items() if any(v in blob for v in variants)]


# --- rows carrying PII in every field ------------------------------------------------------------
PII_TEXT = (f"Hi, {CUE}. I was charged twice: mail {PII['email']} or call {PII['phone']}. Card {PII['card']}, "
            f"IBAN {PII['iban']}, logged in from {PII['ip']}. Regards, {PII['person_accented']}")
LABEL = {"category": "billing", "priority": "high", "product": "pay", "needs_human": True, "language": "en"}


def pii_turn(tid: str, **changes) -> dict:
    """A valid support_triage Turn line with PII in every field a row may fill (message, an extra
    input field, meta extras, a meta key, a slice value), then `changes` applied."""
    row = {"id": tid, "role": "triage",
           "input": {"messages": [{"role": "user", "content": PII_TEXT}], "customer": {"iban": PII["iban"]}},
           "labels": {"capture": dict(LABEL)},
           "meta": {"captured_at": "2026-11-20T10:00:00Z", "customer": CUE_ACCENTED, "ip": PII["ip"],
                    "card_number": CARD_NUMBER, PII["email"]: PII["phone"],
                    "slice": {"category": "billing", "language": "en", "channel": "email", "contact": PII["email"]}}}
    return {**row, **changes}


# Accepted rows: PII in the id (the issue: a name the message introduces survived in the id) and in
# every non-message field (see pii_turn). Each id is distinct so dedupe keeps rows apart by content.
ACCEPTED_IDS = [f"ticket-{PII['email']}", "call_+44_20_7946_0958", "Gwendolyn-Rutherford-7", "Mr_Rutherford",
                "ip:203.0.113.77", "iban-DE89370400440532013000", "4111111111111111"]

# Turn-line rejections: (name, changes to a pii_turn row, kind). Each used to quote its value.
TURN_CASES = [
    ("domain", {"domain": PII["email"]}, "parse_error"),
    ("role", {"role": PII["phone"]}, "unknown_role"),
    ("role_type", {"role": [PII["card"]]}, "parse_error"),
    ("id_text", {"id": CUE}, "parse_error"),
    ("id_number", {"id": CARD_NUMBER}, "parse_error"),
    ("label_source", {"label_source": PII["iban"]}, "parse_error"),
    ("label_key", {"labels": {PII["email"]: dict(LABEL)}}, "parse_error"),
    ("label_value", {"labels": {"gold": CUE}}, "parse_error"),
    ("output", {"output": PII["ip"]}, "parse_error"),
    ("captured_at", {"meta": {"captured_at": f"call {PII['phone']}"}}, "parse_error"),
    ("cluster", {"meta": {"cluster": PII["ip"]}}, "parse_error"),
    ("slice", {"meta": {"slice": [PII["email"]]}}, "parse_error"),
    ("dup_group", {"meta": {"dup_group": CARD_NUMBER}}, "parse_error"),
    ("unknown_field", {PII["email"]: PII["phone"]}, "parse_error"),
    ("input", {"input": CUE_ACCENTED}, "parse_error"),
]
# Lines that are not a Turn at all (text, so they are written as is).
BROKEN_LINES = [
    '{"id": "broken", "input": {"messages": [{"role": "user", "content": "' + PII_TEXT,  # not JSON
    json.dumps([CUE, PII["email"], PII["phone"], PII["card"], PII["iban"], PII["ip"], CUE_ACCENTED]),  # an array
]
# A line that is not UTF-8, with PII around the bad byte.
NOT_UTF8 = ('{"note": "' + PII_TEXT + ' ').encode("utf-8") + b"\xff" + b'"}'
# A valid Turn whose capture label breaks the contract with PII in it: the dataset stage quarantines it.
INVALID_LABEL = pii_turn("bad-label-1", input={"messages": [{"role": "user", "content": PII_TEXT + " (a bad label)"}]},
                         labels={"capture": dict(LABEL, category=CUE, product=PII["email"])})


def chat_row(message: dict | None = None, text: str = PII_TEXT, **response) -> dict:
    """An OpenAI chat log line with PII in the request (messages, metadata slice) and `response` changes."""
    resp = {"id": "chatcmpl-1", "created": 1714564800, "model": "gpt-4o-mini",
            "choices": [{"message": message or {"role": "assistant", "content": json.dumps(LABEL)}}]}
    return {"request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
            "metadata": {"slice": {"contact": PII["phone"]}}, "response": {**resp, **response}}


CHAT_CASES = [  # (name, row, kind)
    ("created_text", chat_row(created=f"call {PII['phone']}"), "parse_error"),
    ("created_range", chat_row(created=CARD_NUMBER), "parse_error"),
    ("tool_arguments", chat_row({"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
        "name": PII["email"], "arguments": f'{{"email": "{PII["email"]}", "phone": "{PII["phone"]}"'}}]}), "parse_error"),
    ("content_not_json", chat_row({"role": "assistant", "content": f"Sure, {CUE}: {PII['iban']}"}), "parse_error"),
    ("refusal", chat_row({"role": "assistant", "content": None, "refusal": f"I can't share {PII['card']}"}),
     "parse_error"),
    ("metadata_role", {**chat_row(), "metadata": {"role": PII["email"]}}, "unknown_role"),
    ("response_id", chat_row(id=CUE), "parse_error"),
]
CHAT_ACCEPTED = [chat_row(id=f"chatcmpl-{PII['email']}", text=PII_TEXT + " (from the chat logs)")]


def langfuse_trace(text: str = PII_TEXT, **obs) -> dict:
    """A Langfuse trace with one generation (PII in its input and metadata) and `obs` changes."""
    gen = {"id": "obs-1", "type": "GENERATION", "startTime": "2024-05-02T09:15:00Z", "traceId": "trace-1",
           "input": [{"role": "user", "content": text}], "metadata": {"slice": {"contact": PII["ip"]}},
           "output": {"role": "assistant", "content": json.dumps(LABEL)}}
    return {"id": "trace-1", "timestamp": "2024-05-02T09:15:00Z", "observations": [{**gen, **obs}]}


LANGFUSE_CASES = [  # (name, trace, kind)
    ("start_time", langfuse_trace(startTime=PII["phone"]), "parse_error"),
    ("output_text", langfuse_trace(output=f"{CUE}, mail {PII['email']}"), "parse_error"),
    ("metadata_role", langfuse_trace(metadata={"role": CUE_ACCENTED}), "unknown_role"),
    ("observation_id", langfuse_trace(id=f"obs {PII['ip']}"), "parse_error"),
]
LANGFUSE_ACCEPTED = [langfuse_trace(PII_TEXT + " (from Langfuse)", id=f"obs-{PII['email']}",
                                     traceId=f"trace-{PII['phone'].replace(' ', '')}")]
