"""PII redaction: detectors, pseudonym consistency within a turn, every field of a turn (meta, keys,
the id), quarantine records, modes, custom patterns, idempotence."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_platform.config.models import CustomPattern, RedactionPolicy
from slm_platform.data.pipeline import quarantine_row
from slm_platform.data.redaction import Redactor, redact_text
from slm_platform.data.sources import RAW_LIMIT, Rejected
from slm_platform.records import stable_hash

RED = Redactor(RedactionPolicy())
MASK = Redactor(RedactionPolicy(mode="mask"))


def hits_of(text: str, redactor: Redactor = RED) -> Counter:
    return redactor.redact_text(text)[1]


# ------------------------------------------------------------------------------- detectors

POSITIVE = [
    # (detector, text, the PII substring that must disappear)
    ("email", "write to anna.schmidt@example.com today", "anna.schmidt@example.com"),
    ("email", "cc: a.b+tag@sub.example.co.uk.", "a.b+tag@sub.example.co.uk"),
    ("email", "Contact <John.Doe@Example.ORG>", "John.Doe@Example.ORG"),
    ("phone", "Call (415) 555-0132 now", "(415) 555-0132"),
    ("phone", "Call 415-555-0132.", "415-555-0132"),
    ("phone", "my number is +44 20 7946 0958 thanks", "+44 20 7946 0958"),
    ("phone", "Appelez le 06 12 34 56 78 svp", "06 12 34 56 78"),
    ("phone", "tel:+14155550132", "+14155550132"),
    ("phone", "+1 (415) 555-0132 is my cell", "+1 (415) 555-0132"),
    ("phone", "Ruf 030 1234567 an", "030 1234567"),
    ("phone", "Phone: 415.555.0132", "415.555.0132"),
    ("card", "card 4111 1111 1111 1111 please", "4111 1111 1111 1111"),
    ("card", "card 5555-5555-5555-4444.", "5555-5555-5555-4444"),
    ("card", "amex 378282246310005 ok", "378282246310005"),
    ("card", "pay with 4242424242424242", "4242424242424242"),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 32 thanks", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "IBAN: DE89 3704 0044 0532 0130 00.", "DE89 3704 0044 0532 0130 00"),
    ("iban", "send to DE89370400440532013000", "DE89370400440532013000"),
    ("iban", "FR14 2004 1010 0505 0001 3M02 606 is mine", "FR14 2004 1010 0505 0001 3M02 606"),
    ("ip", "login from 192.168.1.10 failed", "192.168.1.10"),
    ("ip", "server 10.0.0.1:8080 down", "10.0.0.1"),
    ("ip", "v6 2001:db8::1 here", "2001:db8::1"),
    ("ip", "link-local fe80::1ff:fe23:4567:890a.", "fe80::1ff:fe23:4567:890a"),
    ("ip", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 addr", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ip", "mapped ::ffff:192.0.2.128 addr", "::ffff:192.0.2.128"),
    ("person", "Hi, my name is Anna-Lena O'Brien and I need help", "Anna-Lena O'Brien"),
    ("person", "This is José García from Madrid", "José García"),
    ("person", "Best regards,\nJohn Smith", "John Smith"),
    ("person", "Thanks,\r\nPeter", "Peter"),
    ("person", "Cheers!\nMaría José", "María José"),
    ("person", "Dr. McDonald called", "McDonald"),
    ("person", "Mrs Smith called", "Smith"),
    ("person", "Name: Ada Lovelace", "Ada Lovelace"),
    ("person", "Name = Ada Lovelace", "Ada Lovelace"),
    ("person", "go with the cheapest, name Anna Novak, email below", "Anna Novak"),
    ("person", "book FL-5093. I'm Liam Dubois, thanks", "Liam Dubois"),
    ("person", "I am Diego Silva", "Diego Silva"),
    ("person", "Signed: Jean-Luc Picard", "Jean-Luc Picard"),
    ("person", "please ask for Tom at reception", "Tom"),
    ("person", "or contact Maria.", "Maria"),
    ("person", "Je m'appelle Élodie Durand", "Élodie Durand"),
    ("person", "Bonjour, je m’appelle Zoé", "Zoé"),
    ("person", "Cordialement,\nÉlise", "Élise"),
    ("person", "Me llamo Íñigo Pérez y vivo en Madrid", "Íñigo Pérez"),
    ("person", "Saludos,\nCarmen", "Carmen"),
    ("person", "Ich heiße Jürgen Groß", "Jürgen Groß"),
    ("person", "Ich heisse Jürgen", "Jürgen"),
    ("person", "mein Name ist Hans", "Hans"),
    ("person", "Mit freundlichen Grüßen\nHerr Müller", "Müller"),
]


@pytest.mark.parametrize("detector,text,pii", POSITIVE, ids=[f"{d}:{t[:30]}" for d, t, _ in POSITIVE])
def test_detector_positive(detector: str, text: str, pii: str) -> None:
    out, hits = RED.redact_text(text)
    assert pii not in out
    assert hits == Counter({detector: 1}), (out, hits)
    assert f"<{detector.upper()}_1>" in out
    # the text around the value is kept
    before = text[: text.index(pii)]
    after = text[text.index(pii) + len(pii):]
    assert out == f"{before}<{detector.upper()}_1>{after}"


NEGATIVE = [
    # (detector that must NOT fire, text)
    ("email", "ping me @ the office, or @anna on chat"),
    ("email", "user@localhost is not routable"),
    ("phone", "delivered on 2024-04-01 at 10:30"),
    ("phone", "delivered on 01.04.2024 10:30"),
    ("phone", "stamp 2024-04-01 1200"),
    ("phone", "order #48213 shipped"),
    ("phone", "orders 48213 and 55021"),
    ("phone", "version 1.2.3 and build 10.0.19041.1"),
    ("phone", "price $1,234.56 or 1 234 567 €"),
    ("phone", "open 9:00-17:00, call 555-0132"),
    ("phone", "ISBN 978-3-16-148410-0"),
    ("phone", "room 12 floor 3 code 4711"),
    ("phone", "id 4155550132 without separators"),
    ("card", "card 4111 1111 1111 1112 fails Luhn"),
    ("card", "card 4111111111111112"),
    ("card", "timestamp 1712000000000 ms"),
    ("card", "zeros 0000000000000000"),
    ("card", "short 4111 1111 111"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 01 broken"),
    ("iban", "GB82 WEST 1234 5698 7654 33"),
    ("iban", "SKU AB12 CDEF GHIJ KLMN"),
    ("ip", "ip 10.0.0.256 is not valid"),
    ("ip", "ip 010.1.1.1 has a leading zero"),
    ("ip", "version 1.2.3.4.5"),
    ("ip", "time 10:30:45, mac 00:1a:2b:3c:4d:5e"),
    ("ip", "C++ std::vector and a::b and ::1"),
    ("person", "This is Support, how can I help?"),
    ("person", "Thanks, I'll check tomorrow"),
    ("person", "this is the end, my name is john"),
    ("person", "Please contact Billing Team"),
    ("person", "Anna wrote THIS IS URGENT"),
    ("person", "Drive to the Dr.Smith building"),
    ("person", "regarding Monday"),
    ("person", "username: Alice"),
    ("person", "I'm flying to Rome, rename the trip"),
    ("person", "I am in Paris with my surname on the form"),
]


@pytest.mark.parametrize("detector,text", NEGATIVE, ids=[f"{d}:{t[:30]}" for d, t in NEGATIVE])
def test_detector_negative(detector: str, text: str) -> None:
    out, hits = RED.redact_text(text)
    assert hits[detector] == 0, (out, hits)


def test_clean_text_is_unchanged() -> None:
    text = ("Hello, the export of my monthly report fails with a timeout after 2 minutes (ticket #48213). "
            "It worked on 2024-03-28 at 09:15 with version 4.2.1. Could you look into it?")
    assert RED.redact_text(text) == (text, Counter())


# --------------------------------------------------------------------------- turn handling

def _turn() -> dict:
    return {
        "id": "t-1", "domain": "support", "role": "ticket_router", "label_source": "teacher",
        "input": {"messages": [
            {"role": "system", "content": "Route the ticket."},
            {"role": "user", "content": "I'm locked out. My email is Anna@Example.com, or try "
                                        "bob@example.org. Call +44 20 7946 0958. Thanks, Anna"},
        ]},
        "output": {"name": "reset_password", "arguments": {"email": "anna@example.com", "phone": "+442079460958",
                                                           "attempts": 3, "notify": ["bob@example.org"]}},
        "labels": {"teacher": {"name": "reset_password", "arguments": {"email": "anna@example.com"}},
                   "gold": None},
        "meta": {"captured_at": "2024-04-01T00:00:00Z", "source": "capture",
                 "slice": {"contact": "anna@example.com"}, "dup_group": None, "cluster": 3},
    }


def test_turn_pseudonyms_are_consistent_across_input_output_labels() -> None:
    turn = _turn()
    out, hits = RED.redact_turn(turn)
    user = out["input"]["messages"][1]["content"]
    assert "My email is <EMAIL_1>, or try <EMAIL_2>." in user
    assert out["output"]["arguments"]["email"] == "<EMAIL_1>"  # same value (case-insensitive) -> same placeholder
    assert out["output"]["arguments"]["notify"] == ["<EMAIL_2>"]
    assert out["labels"]["teacher"]["arguments"]["email"] == "<EMAIL_1>"
    assert "<PHONE_1>" in user and out["output"]["arguments"]["phone"] == "<PHONE_1>"
    assert user.endswith("Thanks, <PERSON_1>")
    assert out["meta"]["slice"]["contact"] == "<EMAIL_1>"  # meta is in the same scope
    assert hits == Counter({"email": 6, "phone": 2, "person": 1})


def test_a_name_found_after_a_cue_is_redacted_everywhere_in_the_turn() -> None:
    # the travel booking turn: the name follows a cue in the message, but the tool call's argument
    # (and the gold label) carry it bare; both must get the message's placeholder
    turn = {"input": {"messages": [{"role": "user", "content": "Jonas Patel here. my name is Jonas Patel, email j@x.io"}]},
            "output": {"name": "book", "arguments": {"traveler_name": "Jonas Patel", "email": "j@x.io"}},
            "labels": {"gold": {"name": "book", "arguments": {"traveler_name": "jonas  patel"}}, "oracle": {"who": "Tom"}}}
    out, hits = RED.redact_turn(turn)
    assert out["input"]["messages"][0]["content"] == "<PERSON_1> here. my name is <PERSON_1>, email <EMAIL_1>"
    assert out["output"]["arguments"] == {"traveler_name": "<PERSON_1>", "email": "<EMAIL_1>"}
    assert out["labels"]["gold"]["arguments"]["traveler_name"] == "<PERSON_1>"  # any case or spacing
    assert out["labels"]["oracle"]["who"] == "Tom"  # a name no cue introduced is not guessed
    assert hits["person"] == 4 and "Jonas" not in repr(out) and "jonas" not in repr(out)
    assert RED.redact_turn(out)[0] == out  # still idempotent


def test_one_word_names_are_matched_only_where_capitalised() -> None:
    text, hits = redact_text("Hi, my name is Will. Will said he will call.")
    assert text == "Hi, my name is <PERSON_1>. <PERSON_1> said he will call." and hits["person"] == 2
    masked, _ = Redactor(RedactionPolicy(mode="mask")).redact_turn(
        {"input": {"text": "Regards,\nAda Lovelace"}, "output": {"signed_by": "Ada Lovelace"}})
    assert masked["output"]["signed_by"] == "<PERSON>"


def test_turn_other_fields_and_structure_are_kept() -> None:
    turn = _turn()
    out, _ = RED.redact_turn(turn)
    for key in ("id", "domain", "role", "label_source"):
        assert out[key] == turn[key]
    assert out["meta"] == dict(turn["meta"], slice={"contact": "<EMAIL_1>"})  # only the PII in meta changes
    assert out["output"]["arguments"]["attempts"] == 3
    assert out["labels"]["gold"] is None
    assert out["input"]["messages"][0] == {"role": "system", "content": "Route the ticket."}
    assert list(out["output"]["arguments"]) == ["email", "phone", "attempts", "notify"]  # keys untouched


def test_dict_keys_are_redacted_in_the_turn_scope() -> None:
    turn = {"id": "k", "input": {"anna@example.com": "anna@example.com", "messages": []},
            "meta": {"slice": {"+44 20 7946 0958": "x"}, "source": "capture"}}
    out, hits = RED.redact_turn(turn)
    assert out["input"] == {"<EMAIL_1>": "<EMAIL_1>", "messages": []}
    assert out["meta"] == {"slice": {"<PHONE_1>": "x"}, "source": "capture"}
    assert hits == Counter({"email": 2, "phone": 1})
    assert RED.redact_turn(out) == (out, Counter())


def test_every_field_of_a_turn_is_redacted_and_config_fields_are_kept() -> None:
    # meta (captured_at, slice, extra fields), keys, big integers (a card stored as a JSON number)
    turn = {"id": "t", "domain": "support", "role": "triage", "label_source": "gold",
            "input": {"messages": [{"role": "user", "content": "Hi, my name is Gwendolyn Rutherford"}]},
            "labels": {"gold": {"who": "Gwendolyn Rutherford"}},
            "meta": {"captured_at": "2024-04-01T10:30:00Z", "slice": {"channel": "gw@example.org"},
                     "customer": "Gwendolyn Rutherford", "ip": "203.0.113.77", "card": 4111111111111111,
                     "ms": 1714567890123, "cluster": 3}}
    out, hits = RED.redact_turn(turn)
    assert out["labels"]["gold"]["who"] == out["meta"]["customer"] == "<PERSON_1>"
    assert out["meta"]["slice"]["channel"] == "<EMAIL_1>" and out["meta"]["ip"] == "<IP_1>"
    assert out["meta"]["card"] == "<CARD_1>" and out["meta"]["ms"] == 1714567890123  # a timestamp is kept
    assert out["meta"]["captured_at"] == "2024-04-01T10:30:00Z" and out["meta"]["cluster"] == 3
    assert {k: out[k] for k in ("id", "domain", "role", "label_source")} == {
        "id": "t", "domain": "support", "role": "triage", "label_source": "gold"}
    for needle in ("Gwendolyn", "Rutherford", "gw@example.org", "203.0.113.77", "4111111111111111"):
        assert needle not in repr(out)
    assert hits == Counter({"person": 3, "email": 1, "ip": 1, "card": 1})


@pytest.mark.parametrize("tid", [
    "ticket-gwendolyn.rutherford@example.org",  # an email in the id
    "ticket-+442079460958",  # a phone glued to the id by a separator
    "call_+44_20_7946_0958",
    "4111111111111111",  # a card number as the whole id
    "ip:203.0.113.77",
    "Gwendolyn-Rutherford-7",  # the name the message introduces with a cue
    "Mr_Rutherford",  # a cue inside the id itself
])
def test_an_id_with_pii_becomes_a_stable_hash(tid: str) -> None:
    turn = {"id": tid, "input": {"messages": [{"role": "user", "content": "my name is Gwendolyn Rutherford"}]}}
    out, hits = RED.redact_turn(turn)
    assert out["id"] == "pii-" + stable_hash(tid)  # stable across runs: dedupe groups and splits agree
    assert sum(hits.values()) >= 2
    assert RED.redact_turn(out)[0]["id"] == out["id"]  # idempotent (capture -> dataset redacts twice)
    other, _ = RED.redact_turn(dict(turn, id=tid + "x"))
    assert other["id"] != out["id"]  # unique: no two rows share an id after redaction


def test_ids_from_other_systems_in_meta_are_hashed_when_they_hold_pii() -> None:
    turn = {"id": "t", "input": {"messages": [{"role": "user", "content": "my name is Gwendolyn Rutherford"}]},
            "meta": {"trace_id": "trace-+442079460958", "conversation": "conv-Gwendolyn-Rutherford",
                     "session": "s:gw@example.org", "model": "gpt-4o-mini", "captured_at": "2024-05-01T12:00:00.123+02:00",
                     "thread": "conv-20261120-1-000001", "slice": {"channel": "web_form", "note": "call +44 20 7946 0958"}}}
    out, _ = RED.redact_turn(turn)
    meta = out["meta"]
    assert meta["trace_id"] == "pii-" + stable_hash("trace-+442079460958")  # glued by '-': found, hashed whole
    assert meta["conversation"] == "pii-" + stable_hash("conv-Gwendolyn-Rutherford")  # the cue's name, glued
    assert meta["session"] == "s:<EMAIL_1>"  # what the text detectors find is redacted as text
    assert meta["slice"]["note"] == "call <PHONE_1>"
    for key in ("model", "captured_at", "thread"):
        assert meta[key] == turn["meta"][key]
    assert meta["slice"]["channel"] == "web_form"
    assert RED.redact_turn(out) == (out, Counter())


@pytest.mark.parametrize("tid", ["st-84c831cd2c-0000000", "travel-20261120-1-0000000", "chatcmpl-001",
                                 "obs-gen-1", "simple_python_0", "5f0c6d3e-9b1a-4c55-8b5e-0d5c0a6f3b21"])
def test_an_id_without_pii_is_kept(tid: str) -> None:
    assert RED.redact_turn({"id": tid, "input": {}})[0]["id"] == tid


def test_redact_value_walks_any_structure_in_one_scope() -> None:
    record = {"kind": "parse_error", "reason": "field 'role' is not one of ['triage']", "location": "a.jsonl:3",
              "raw": {"role": "+44 20 7946 0958", "gw@example.org": ["my name is Ada Lovelace", "Ada Lovelace"],
                      "n": 4111111111111111}}
    out, hits = RED.redact_value(record)
    assert out["raw"] == {"role": "<PHONE_1>", "<EMAIL_1>": ["my name is <PERSON_1>", "<PERSON_1>"], "n": "<CARD_1>"}
    assert out["reason"] == record["reason"] and out["location"] == "a.jsonl:3"
    assert hits == Counter({"phone": 1, "email": 1, "person": 2, "card": 1})
    assert RED.redact_value(out) == (out, Counter())


def test_quarantine_row_redacts_reason_location_and_row_then_cuts() -> None:
    pii = "gwendolyn.rutherford@example.org"
    parsed = {"id": "x", "domain": pii, "input": {"messages": [{"role": "user", "content": "call +44 20 7946 0958"}]}}
    rec, hits = quarantine_row(Rejected("capture", f"{pii}/a.jsonl:3", f"quoted {pii}", "{...}", "parse_error", parsed),
                               RED)
    assert pii not in repr(rec) and "7946" not in repr(rec)
    assert rec["location"] == "<EMAIL_1>/a.jsonl:3" and rec["reason"] == "quoted <EMAIL_1>"  # one scope
    assert rec["raw"] == '{"id": "x", "domain": "<EMAIL_1>", "input": {"messages": [{"role": "user", ' \
                         '"content": "call <PHONE_1>"}]}}'
    assert hits["email"] == 3
    # unparsed text is redacted as text, whole, and only then cut to RAW_LIMIT: a value at the cut never
    # leaks a prefix
    line = "x" * (RAW_LIMIT - 5) + " " + pii + " tail"
    rec, _ = quarantine_row(Rejected("capture", "a.jsonl:1", "line is not valid JSON", line), RED)
    assert len(rec["raw"]) == RAW_LIMIT and "gwendolyn" not in rec["raw"] and rec["raw"].endswith(" <EMA")


def test_input_turn_is_not_mutated_and_result_shares_no_containers() -> None:
    turn = _turn()
    before = copy.deepcopy(turn)
    out, _ = RED.redact_turn(turn)
    assert turn == before
    out["meta"]["dup_group"] = "g1"
    out["meta"]["slice"]["x"] = "y"
    out["input"]["messages"].append({"role": "user", "content": "x"})
    assert turn == before


def test_scope_is_per_turn() -> None:
    a, _ = RED.redact_turn({"id": "a", "input": {"text": "from x@example.com"}})
    b, _ = RED.redact_turn({"id": "b", "input": {"text": "from y@example.com"}})
    assert a["input"]["text"] == b["input"]["text"] == "from <EMAIL_1>"


def test_two_values_get_two_numbers_and_repeats_keep_theirs() -> None:
    out, hits = RED.redact_text("a@x.com, b@x.com, A@X.com; 415-555-0132 or +1 415 555 0132")
    assert out == "<EMAIL_1>, <EMAIL_2>, <EMAIL_1>; <PHONE_1> or <PHONE_1>"
    assert hits == Counter({"email": 3, "phone": 2})


def test_mask_mode() -> None:
    text = "Mail anna@example.com or bob@example.com, card 4111 1111 1111 1111, my name is Anna Smith"
    out, hits = MASK.redact_text(text)
    assert out == "Mail <EMAIL> or <EMAIL>, card <CARD>, my name is <PERSON>"
    assert hits == Counter({"email": 2, "card": 1, "person": 1})
    turn, _ = MASK.redact_turn({"id": "m", "input": {"body": "ip 10.1.2.3"}, "output": {"ip": "10.1.2.3"}})
    assert turn["input"]["body"] == "ip <IP>" and turn["output"]["ip"] == "<IP>"


def test_custom_pattern() -> None:
    policy = RedactionPolicy(custom=[CustomPattern(name="ticket_secret", pattern=r"\bTS-[A-Z0-9]{8}\b")])
    red = Redactor(policy)
    out, hits = red.redact_text("secrets TS-AB12CD34 and TS-ZZ99YY88, again TS-AB12CD34, mail a@b.io")
    assert out == "secrets <TICKET_SECRET_1> and <TICKET_SECRET_2>, again <TICKET_SECRET_1>, mail <EMAIL_1>"
    assert hits == Counter({"ticket_secret": 3, "email": 1})
    masked = Redactor(RedactionPolicy(mode="mask", custom=policy.custom)).redact_text("TS-AB12CD34")
    assert masked == ("<TICKET_SECRET>", Counter({"ticket_secret": 1}))


def test_custom_pattern_never_rewrites_placeholders() -> None:
    red = Redactor(RedactionPolicy(custom=[CustomPattern(name="shout", pattern=r"[A-Z]{3,}")]))
    out, hits = red.redact_text("mail a@b.io NOW")
    assert out == "mail <EMAIL_1> <SHOUT_1>"
    assert red.redact_text(out) == (out, Counter())
    # a pattern that can match the empty string does not loop or insert anything
    empty = Redactor(RedactionPolicy(custom=[CustomPattern(name="maybe", pattern=r"x*")]))
    assert empty.redact_text("abc xx") == ("abc <MAYBE_1>", Counter({"maybe": 1}))


def test_detector_selection() -> None:
    red = Redactor(RedactionPolicy(detectors=["email"]))
    text = "a@b.io 415-555-0132 4111111111111111 10.0.0.1 my name is Bob"
    assert red.redact_text(text) == (text.replace("a@b.io", "<EMAIL_1>"), Counter({"email": 1}))


def test_disabled_policy_is_identity() -> None:
    red = Redactor(RedactionPolicy(enabled=False))
    turn = _turn()
    out, hits = red.redact_turn(turn)
    assert out == turn and hits == Counter()
    assert red.redact_text("a@b.io") == ("a@b.io", Counter())


def test_policy_may_be_any_object_or_none() -> None:
    class P:
        enabled = True
        mode = "mask"
        detectors = ["phone"]
        custom = [{"name": "pin", "pattern": r"PIN \d{4}"}]

    assert Redactor(P()).redact_text("PIN 1234 at 415-555-0132") == ("<PIN> at <PHONE>", Counter({"pin": 1, "phone": 1}))
    assert Redactor(None).redact_text("a@b.io")[0] == "<EMAIL_1>"
    assert redact_text("a@b.io")[0] == "<EMAIL_1>"
    with pytest.raises(ValueError):
        Redactor({"detectors": ["ssn"]})


def test_redact_turns_sums_hits() -> None:
    turns, hits = RED.redact_turns([_turn(), {"id": "x", "input": {"t": "ip 10.0.0.1"}}])
    assert len(turns) == 2 and hits == Counter({"email": 6, "phone": 2, "person": 1, "ip": 1})


def test_already_redacted_turn_is_unchanged() -> None:
    out, _ = RED.redact_turn(_turn())
    again, hits = RED.redact_turn(out)
    assert again == out and hits == Counter()


# ------------------------------------------------------------------------------ properties

FRAGMENTS = [
    "anna@example.com", "a.b+c@x.co.uk", "@", ".", "-", " ", "  ", "\n", ",", ":", "::", "(", ")", "+", "#", "<", ">",
    "4111 1111 1111 1111", "4111111111111111", "5555-5555-5555-4444", "415-555-0132", "(415) 555-0132",
    "+44 20 7946 0958", "06 12 34 56 78", "030 1234567", "2024-04-01", "10:30", "192.168.1.10", "10.0.0.256",
    "2001:db8::1", "::ffff:1.2.3.4", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "0", "7", "42",
    "my name is", "Thanks,", "Dr.", "this is", "Name:", "Anna", "Smith", "O'Brien", "Jean-Luc", "Support",
    "I'll", "x", "ab", "Élodie", "<EMAIL_1>", "<PHONE>", "_", "é", "İ",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_never_raises_and_is_idempotent(text: str) -> None:
    out, hits = RED.redact_text(text)
    assert isinstance(out, str) and all(v > 0 for v in hits.values())
    assert RED.redact_text(out) == (out, Counter())
    mout, _ = MASK.redact_text(text)
    assert MASK.redact_text(mout)[0] == mout


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=25).map("".join))
def test_pii_like_text_is_idempotent(text: str) -> None:
    out, _ = RED.redact_text(text)
    assert RED.redact_text(out) == (out, Counter())
    mout, _ = MASK.redact_text(text)
    assert MASK.redact_text(mout) == (mout, Counter())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS + ["-", "_", ":", "ticket", "Gwendolyn", "Rutherford"]) | st.text(max_size=3),
                min_size=1, max_size=12).map("".join),
       st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=12).map("".join))
def test_turn_ids_and_meta_are_idempotent(token: str, text: str) -> None:
    turn = {"id": token.replace(" ", "") or "x", "input": {"messages": [{"role": "user", "content": text}]},
            "meta": {"trace_id": token, "slice": {"k": token}, token: text}}
    out, _ = RED.redact_turn(turn)
    assert RED.redact_turn(out) == (out, Counter())
