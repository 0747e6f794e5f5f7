"""Rule-based floor for the travel domain: keywords, regexes, a small city list, simple dates.

Deliberately simple (it is the bar a fine-tune must clear, not a solution): English keywords only,
twenty city names and their airport codes (no typos, few translations, none of the cities that come
with drift), a handful of date forms, optional search arguments only when stated in this message
(it forgets earlier preferences). When it answers, the answer is valid for the role's contract;
when it cannot tell, it returns None. Redacted PII placeholders (<EMAIL_1>) count as values.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

CITIES = {
    "lisbon": "Lisbon", "lisboa": "Lisbon", "porto": "Porto", "madrid": "Madrid", "barcelona": "Barcelona",
    "paris": "Paris", "london": "London", "berlin": "Berlin", "munich": "Munich", "münchen": "Munich",
    "vienna": "Vienna", "wien": "Vienna", "prague": "Prague", "rome": "Rome", "roma": "Rome",
    "amsterdam": "Amsterdam", "dublin": "Dublin", "athens": "Athens", "new york": "New York", "nyc": "New York",
    "boston": "Boston", "chicago": "Chicago", "san francisco": "San Francisco", "toronto": "Toronto",
    "tokyo": "Tokyo",
    # airport codes people type
    "lis": "Lisbon", "opo": "Porto", "mad": "Madrid", "bcn": "Barcelona", "cdg": "Paris", "lhr": "London",
    "ber": "Berlin", "muc": "Munich", "vie": "Vienna", "prg": "Prague", "fco": "Rome", "ams": "Amsterdam",
    "dub": "Dublin", "ath": "Athens", "jfk": "New York", "bos": "Boston", "ord": "Chicago", "sfo": "San Francisco",
    "yyz": "Toronto", "hnd": "Tokyo",
}
_CITY_RE = re.compile(r"\b(" + "|".join(sorted((re.escape(c) for c in CITIES if len(c) > 3), key=len, reverse=True))
                      + r")\b")  # matched against the lower-cased text
_CODE_RE = re.compile(r"\b([A-Z]{3})\b")  # airport codes only in capitals ("ord" is a word)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"))}
_WEEKDAYS = {d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))}
_MONTH_ALT = "|".join(list(_MONTHS) + [m[:3] for m in _MONTHS if len(m) > 3])
_DATE_RE = re.compile(
    r"\b(?:(?P<iso>\d{4}-\d\d-\d\d)|(?P<m1>" + _MONTH_ALT + r")\s+(?P<d1>\d{1,2})(?:st|nd|rd|th)?|(?P<d2>\d{1,2})\s+(?P<m2>"
    + _MONTH_ALT + r")|(?P<tomorrow>tomorrow)|(?:next|this coming)\s+(?P<wd>" + "|".join(_WEEKDAYS) + r")|in\s+(?P<days>\d{1,3})\s+days"
    r"|in (?P<weeks>a|two) weeks?|the\s+(?P<dom>\d{1,2})(?:st|nd|rd|th))\b")  # matched against the lower-cased text
_RETURN_CUE = re.compile(r"\b(until|till|back|return\w*|check\w* out)\b")
_DIGIT = re.compile(r"\d")
_NIGHTS_RE = re.compile(r"\b(\d{1,2})\s+nights\b")
_PEOPLE_RE = re.compile(r"\b(\d)\s+(?:people|persons|adults|travell?ers|of us)\b")
_BUDGET_RE = re.compile(r"\b(?:under|max|below|budget(?: is)?|no more than)\s+([$£€]?)(\d{2,5})\s*(euros?|eur|pounds|gbp|dollars|bucks|usd)?")
# PII may arrive redacted (<EMAIL_1>, <PHONE_1>, <PERSON_1>): the placeholder stands for the value.
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}|<EMAIL(?:_\d+)?>")
_PHONE_RE = re.compile(r"\+\d[\d ]{7,16}\d|<PHONE(?:_\d+)?>")
_NAME_RE = re.compile(r"(?:\bmy name is|\bI'm|\bIt's|\bfor|\bname:?|\btraveler is|^)\s*([A-Z][a-zü]+ [A-Z][a-zü]+\b|<PERSON(?:_\d+)?>)")
_OPTION_RE = re.compile(r"\b(FL|HT)-(\d{4})\b")
_OPTION_NO_RE = re.compile(r"\b(?:option|number) (\d)\b|\bthe (first|second|third) (?:one|option)\b", re.I)
_ORD = {"first": 1, "second": 2, "third": 3}
_CABINS = (("premium economy", "premium_economy"), ("business", "business"), ("first class", "first"),
           ("economy", "economy"))
_AREAS = (("airport", "airport"), ("old town", "old_town"), ("downtown", "city_center"), ("center", "city_center"),
          ("beach", "beach"))
_CATEGORIES = (("museum", "museum"), ("galler", "museum"), ("restaurant", "restaurant"), ("eat", "restaurant"), ("food", "restaurant"),
               ("bar", "nightlife"), ("nightlife", "nightlife"), ("club", "nightlife"), ("park", "park"), ("garden", "park"),
               ("beach", "beach"), ("sight", "landmark"), ("landmark", "landmark"))


def _date(m: re.Match, today: dt.date) -> str | None:
    g = m.groupdict()
    try:
        if g["weeks"]:
            return (today + dt.timedelta(days=7 if g["weeks"] == "a" else 14)).isoformat()
        if g["dom"]:
            d = today + dt.timedelta(days=1)
            for _ in range(62):
                if d.day == int(g["dom"]):
                    return d.isoformat()
                d += dt.timedelta(days=1)
            return None
        if g["iso"]:
            return dt.date.fromisoformat(g["iso"]).isoformat()
        if g["tomorrow"]:
            return (today + dt.timedelta(days=1)).isoformat()
        if g["wd"]:
            ahead = (_WEEKDAYS[g["wd"]] - today.weekday() - 1) % 7 + 1
            return (today + dt.timedelta(days=ahead)).isoformat()
        if g["days"]:
            return (today + dt.timedelta(days=int(g["days"]))).isoformat()
        month, day = (g["m1"], g["d1"]) if g["m1"] else (g["m2"], g["d2"])
        month = next(k for k in _MONTHS if k.startswith(month))
        d = dt.date(today.year, _MONTHS[month], int(day))
        if d <= today:
            d = d.replace(year=today.year + 1)
        return d.isoformat()
    except ValueError:
        return None


def _extract(text: str, today: dt.date, depart: str | None = None) -> dict[str, Any]:
    """Slot values stated in one message, as far as these rules can see (`depart`: known departure)."""
    out: dict[str, Any] = {}
    low = text.lower()
    found = [(m.start(), CITIES[m.group(1)]) for m in _CITY_RE.finditer(low)]
    found += [(m.start(), CITIES[m.group(1).lower()]) for m in _CODE_RE.finditer(text) if m.group(1).lower() in CITIES]
    for start, city in sorted(found):
        before = low[max(0, start - 12):start].rstrip()
        if before.endswith(("from", " of")):
            out.setdefault("origin", city)
        else:
            out.setdefault("destination", city)
    dates = [d for d in (_date(m, today) for m in _DATE_RE.finditer(low)) if d]
    if dates and depart and _RETURN_CUE.search(low):
        out["return_date"] = dates[0]  # only a return date in this message
    elif dates:
        out["depart_date"] = dates[0]
        if len(dates) > 1:
            out["return_date"] = dates[1]
    has_digit = _DIGIT.search(text) is not None
    m = _NIGHTS_RE.search(low) if has_digit else None
    start = out.get("depart_date") or depart
    if start and (m or "a week" in low):
        nights = int(m.group(1)) if m else 7
        out["return_date"] = (dt.date.fromisoformat(start) + dt.timedelta(days=nights)).isoformat()
    m = _PEOPLE_RE.search(low) if has_digit else None
    if m:
        out["travelers"] = int(m.group(1))
    elif "just me" in low:
        out["travelers"] = 1
    m = _BUDGET_RE.search(low) if has_digit else None
    if m:
        sym, unit = m.group(1), m.group(3) or ""
        out["budget"] = int(m.group(2))
        out["currency"] = "EUR" if sym == "€" or unit.startswith("eur") else "GBP" if sym == "£" or unit in ("pounds", "gbp") else "USD"
    for word, cabin in _CABINS:
        if word in low:
            out["cabin"] = cabin
            break
    if "hotel" in low or "stay" in low or "somewhere" in low:
        for word, area in _AREAS:
            if word in low:
                out["hotel_area"] = area
                break
    if "@" in text or "<" in text or "name" in low or "i'm" in low or "it's" in low or "for " in low or "traveler" in low:
        m = _NAME_RE.search(text)
        if m:
            out["traveler_name"] = m.group(1)
    m = _EMAIL_RE.search(text) if "@" in text or "<EMAIL" in text else None
    if m:
        out["email"] = m.group(0)
    m = _PHONE_RE.search(text) if "+" in text or "<PHONE" in text else None
    if m:
        out["phone"] = m.group(0)
    return out


def _flights(known: dict, said: dict) -> dict | None:
    """Required arguments from everything known; optional ones only from this message (a known gap)."""
    if not all(k in known for k in ("origin", "destination", "depart_date")):
        return None
    args = {"origin": known["origin"], "destination": known["destination"], "depart_date": known["depart_date"]}
    for src, dst in (("return_date", "return_date"), ("travelers", "travelers"), ("cabin", "cabin"), ("budget", "max_price")):
        if src in said:
            args[dst] = said[src]
    return {"tool": "search_flights", "arguments": args}


def _hotels(known: dict, said: dict) -> dict | None:
    if not all(k in known for k in ("destination", "depart_date", "return_date")):
        return None
    args = {"city": known["destination"], "check_in": known["depart_date"], "check_out": known["return_date"]}
    if "travelers" in said:
        args["guests"] = said["travelers"]
    if "hotel_area" in said:
        args["area"] = said["hotel_area"]
    return {"tool": "search_hotels", "arguments": args}


def _plan(input: dict) -> dict:
    """Keyword intent + regex slots; the last assistant message says what is pending or on screen."""
    messages = input.get("messages") or []
    text = str(messages[-1].get("content") or "") if messages else ""
    prev = str(messages[-2].get("content") or "") if len(messages) > 1 and messages[-2].get("role") == "assistant" else ""
    slots = dict(input.get("slots") or {})
    try:
        today = dt.date.fromisoformat(slots.get("today", ""))
    except ValueError:
        today = dt.date.today()
    low = text.lower()
    updates = _extract(text, today, slots.get("depart_date"))
    tools: list[dict] = []
    intent = "smalltalk"

    category = next((c for w, c in _CATEGORIES if w in low), None)
    wants_flight = "flight" in low or "fly" in low
    wants_hotel = "hotel" in low or "stay" in low or "accommodation" in low
    option = _OPTION_RE.search(text)
    if option is None:
        m = _OPTION_NO_RE.search(text)
        listed = _OPTION_RE.findall(prev)
        if m and listed:
            k = int(m.group(1)) if m.group(1) else _ORD[m.group(2).lower()]
            if k <= len(listed):
                option = "-".join(listed[k - 1])
    else:
        option = option.group(0)
    pending_book = re.search(r"To book ((?:FL|HT)-\d{4})", prev)

    if option or pending_book or "book" in low and not (wants_flight or wants_hotel):
        oid = option or (pending_book.group(1) if pending_book else None)
        merged = {**slots, **updates}
        if oid and "traveler_name" in merged and "email" in merged:
            tools = [{"tool": "book", "arguments": {"option_id": oid, "traveler_name": merged["traveler_name"],
                                                      "email": merged["email"]}}]
            intent = "confirm_booking"
        else:
            intent = "ask_clarification"
    elif category and not (wants_flight or wants_hotel):
        city = updates.pop("destination", None) or updates.pop("origin", None) or slots.get("destination")
        updates = {}
        if city:
            tools = [{"tool": "search_places", "arguments": {"city": city, "category": category}}]
            intent = "show_options"
        else:
            intent = "ask_clarification"
    elif wants_flight or wants_hotel or (updates and prev.startswith(("To search", "Flights", "Hotels"))):
        if not (wants_flight or wants_hotel):  # an answer or a correction continues what is on screen
            wants_flight = "flight" in prev[:30].lower()
            wants_hotel = "hotel" in prev[:30].lower()
        merged = {**slots, **updates}
        wanted = ([_flights(merged, updates)] if wants_flight else []) + ([_hotels(merged, updates)] if wants_hotel else [])
        if wanted and all(wanted):
            tools = wanted
            intent = "show_options"
        else:
            intent = "ask_clarification"
    elif re.search(r"\b(recap|so far|summary|summari[sz]e|planned)\b", low):
        intent = "summarize_trip"
    elif re.search(r"\b(visa|weather|insurance|esim)\b", low):
        intent = "out_of_scope"
    if "phone" in updates and not _phone_ok(updates["phone"]):
        del updates["phone"]
    return {"slot_updates": updates, "tool_requests": tools, "render_intent": intent}


def _phone_ok(p: str) -> bool:
    return bool(re.fullmatch(r"[+(]?[0-9][0-9 ()-]{5,18}[0-9]|<PHONE(_\d+)?>", p))


def plan_turn(input: dict) -> dict | None:
    """The plan for one user turn, or None when the input has no user message."""
    if not (input.get("messages") or []):
        return None
    return _plan(input)


def call_tool(input: dict) -> dict | None:
    """The next tool call, or None when these rules see nothing to call."""
    if not (input.get("messages") or []):
        return None
    plan = _plan(input)
    if not plan["tool_requests"]:
        return None
    first = plan["tool_requests"][0]
    return {"name": first["tool"], "arguments": first["arguments"]}
