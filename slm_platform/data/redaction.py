"""PII redaction, applied before anything is persisted (capture files, dataset splits, quarantine).

Why here: nothing that a user typed may reach storage, a teacher prompt or a training set
un-redacted, so capture ingestion and the dataset stage both run every turn through a `Redactor`
first (and the gateway runs `redact_text` on what it logs). Redaction is idempotent: running it
over already-redacted data changes nothing, so re-redacting capture artifacts is harmless.

What is redacted: every string of a turn, dict keys included, in every field (`meta` too; large
integers are read as digits, so a card number stored as a JSON number is found) except `domain`,
`role` and `label_source`, which the boundary check (`records.check_turn`) allows only to hold
values from the config. The `id` is a key (dedupe groups, the split-leakage check), so it is never
rewritten in part: an id in which a detector finds anything becomes ``pii-<hash of the id>``,
stable across runs and unique. Detectors are made for text and skip a value glued to a word by
``-``, ``_``, ``:`` ... ("trace-+442079460958"), so an id, and every whitespace-free string in
`meta` (trace and conversation ids from other systems), is also scanned with those separators read
as spaces; a hit there replaces the whole string by its ``pii-<hash>`` (ids in meta stay usable as
keys). Quarantine records (reasons, locations, rejected rows) go through `redact_value`, the same
walk for any JSON-like value.

Modes:
- ``mask``: every hit becomes ``<EMAIL>``, ``<PHONE>``, ... (custom: ``<TICKET_SECRET>``).
- ``pseudonymize`` (default): numbered placeholders ``<EMAIL_1>``, ``<EMAIL_2>``, ... that are
  consistent WITHIN ONE TURN: the same value maps to the same placeholder in ``input``, ``output``
  and ``labels``, so a tool call's arguments still refer to what the message said
  (``{"email": "<EMAIL_1>"}`` next to "write to <EMAIL_1>") and stay learnable.
  Values are compared normalised: emails lower-cased, phones by their last 9 digits (so
  ``+1 415-555-0132`` and ``(415) 555-0132`` agree), cards by digits, IBANs compact upper-case,
  names case-folded.

Detectors (built-in, run in this order; each one sees the text left by the ones before it):
- ``email``: local@domain.tld (ASCII local part, dotted domain, alphabetic TLD).
- ``iban``: 2-letter country + 2 check digits + BBAN, compact or in groups of four, only when the
  ISO 13616 mod-97 check passes (length checked against the country table where known).
- ``card``: 13-19 digits with optional single spaces/dashes, starting 2-6 (the issuer ranges of
  the card networks), only when the Luhn check passes and not all one digit.
- ``ip``: IPv4 with valid octets (no leading zeros); IPv6 incl. compressed and IPv4-suffixed forms,
  validated by `ipaddress` (needs at least 5 hex digits, so ``a::b`` or ``::1`` are left alone).
- ``phone``: ``+CC`` international numbers (8-15 digits) and national numbers written in groups:
  ``(415) 555-0132``, ``415-555-0132``, ``020 7946 0958``, ``06 12 34 56 78``, ``030 1234567``
  (9-12 digits). Not: dates (``2024-04-01``, ``01.04.2024 10:30``), times, ``#48213``, versions,
  prices, digit runs without separators, or anything glued to letters or longer digit sequences.
- ``person``: 1-3 capitalised words (accented letters, hyphens, apostrophes, ``McDonald``) right
  after a cue: "my name is", "this is", "Name:", "signed", "regards,", "thanks,", "cheers,", "Mr./
  Mrs./Ms./Dr./Prof.", "contact", "ask for", "je m'appelle", "me llamo", "ich heiße",
  "mein Name ist", "cordialement", "saludos", "Herr/Frau", ... A stop-list drops "this is
  Support", "thanks, I'll", "contact Billing Team".
- custom patterns from the policy (``CustomPattern(name, pattern)`` -> ``<NAME_1>``), run first.

Performance: regexes are compiled once and start with a character class (so the regex engine
skips to candidates in C); cheap pre-checks skip detectors that cannot match (no "@" -> no email;
fewer than 7 digits -> no phone/card/IBAN; no cue word -> no person). A string is re-scanned until
nothing more is found (usually one extra scan, only for strings that had hits), which is what
makes the result idempotent even where a replacement changes a neighbour's context.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slm_platform.records import stable_hash

__all__ = ["DETECTORS", "Redactor", "redact_text"]

DETECTORS: tuple[str, ...] = ("email", "phone", "card", "iban", "ip", "person")
_MAX_PASSES = 6
_MIN_LEN = 6  # shortest thing a built-in detector can find: "a@b.co", "Dr. Al"
_BIG_INT = 10**12  # integers from here on (13+ digits) are checked as text: cards stored as numbers
# Turn fields the boundary check restricts to config values (the domain name, role ids, label sources).
_CONFIG_VALUED = frozenset({"domain", "role", "label_source"})
# Inside an id, separators read as spaces so a detector sees "ticket-+44..." or "Mr_Smith" as words.
_ID_SEPARATORS = re.compile(r"[\-_:/|#=,;~]+")
_HASHED_ID = re.compile(r"pii-[0-9a-f]{16}")
_WHITESPACE = re.compile(r"\s")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?)?(?:Z|[+-]\d\d:?\d\d)?")
_KEY_CACHE = 50_000  # distinct clean dict keys remembered per Redactor (keys repeat on every turn)

# ----------------------------------------------------------------------------------- helpers


def _char_ranges(pred) -> str:
    """A regex character-class body for the letters in the Latin, Greek and Cyrillic blocks with pred."""
    spans: list[tuple[int, int]] = []
    for lo, hi in ((0x41, 0x24F), (0x370, 0x52F), (0x1E00, 0x1EFF)):
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if ch.isalpha() and pred(ch):
                if spans and spans[-1][1] == cp - 1:
                    spans[-1] = (spans[-1][0], cp)
                else:
                    spans.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in spans)


_UP = _char_ranges(str.isupper)
_LOW = _char_ranges(str.islower)

# At least 7 (13) digits anywhere; linear-time (possessive) and anchored at the start.
_HAS4 = re.compile(r"(?:\D*+\d){4}")
_HAS7 = re.compile(r"(?:\D*+\d){7}")
_HAS13 = re.compile(r"(?:\D*+\d){13}")
_NON_DIGIT = re.compile(r"\D+")
# Placeholders this module writes (and the only thing custom patterns are kept away from).
_PLACEHOLDER_SPLIT = re.compile(r"(<[A-Z][A-Z0-9_]*>)")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


def strip_placeholders(text: str) -> str:
    """Text without redaction placeholders: they say nothing about a turn's topic (clustering, drift)."""
    return _PLACEHOLDER.sub(" ", text) if "<" in text else text

# ------------------------------------------------------------------------------------- email

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_LOCAL_REV = re.compile(r"[A-Za-z0-9._%+\-]{1,64}")
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])")

# -------------------------------------------------------------------------------------- IBAN

# ISO 13616 registry lengths (countries not listed are accepted on the mod-97 check alone).
_IBAN_LEN = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9_].)[A-Z]\d\d"
    r"(?:[A-Z0-9]{11,30}+|(?:[ \u00a0][A-Z0-9]{4}){2,7}+(?:[ \u00a0][A-Z0-9]{1,3})?)"
    r"(?![A-Za-z0-9_])")
_IBAN_TO_DIGITS = {ord(c): str(10 + i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}


def _mod97_ok(compact: str) -> bool:
    return int((compact[4:] + compact[:4]).translate(_IBAN_TO_DIGITS)) % 97 == 1


# -------------------------------------------------------------------------------------- card

_CARD = re.compile(r"[2-6](?<![\w.+\-/].)(?<!\d[ \-].)(?:[ \-]?\d){12,18}+(?![\w]|[ \-.]\d)")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_ok(digits: str) -> bool:
    total = 0
    double = False
    for ch in reversed(digits):
        n = ord(ch) - 48
        total += _LUHN_DOUBLE[n] if double else n
        double = not double
    return total % 10 == 0


# ---------------------------------------------------------------------------------------- IP

_IPV4 = re.compile(r"\d(?<![\w.].)\d{0,2}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}+(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                   r"(?![\w:]|\.\d)")
_HEX = re.compile(r"[0-9A-Fa-f]")

# ------------------------------------------------------------------------------------- phone

_SEP = r"[ \u00a0.\-]"
_PHONE = re.compile(
    r"[+(\d]"
    r"(?<![\w+#$€£¥/@.,\-].)"           # nothing glued on before the number
    r"(?<!\d[ \u00a0.\-].)"              # nor the middle of a longer digit sequence
    r"(?:"
    rf"(?<=\+)\d{{1,3}}(?:{_SEP}?\(\d{{1,5}}\))?(?:{_SEP}?\d{{1,5}}){{1,6}}+"      # +44 20 7946 0958
    rf"|(?<=\()\d{{2,5}}\){_SEP}?\d{{2,5}}(?:{_SEP}\d{{2,5}}){{1,3}}+"              # (415) 555-0132
    rf"|(?<=\d)\d{{1,4}}(?:{_SEP}\d{{2,5}}){{2,4}}+"                                # 415-555-0132, 06 12 34 56 78
    r"|(?<=0)\d{1,4}[ \u00a0/\-]\d{5,8}"                                            # 030 1234567
    r")"
    r"(?![\w@]|[ \u00a0.,:/\-]\d)")
_PHONE_DATE = re.compile(r"(?:(?:19|20)\d\d[ \-./](?:0?[1-9]|1[0-2])[ \-./]|\d{1,2}[ \-./]\d{1,2}[ \-./](?:19|20)\d\d)")
_PHONE_IPLIKE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")

# ------------------------------------------------------------------------------------ person

_WORD = rf"[{_UP}](?:[{_LOW}]+(?:[{_UP}][{_LOW}]+)?|(?=['’]))(?:['’\-][{_UP}]?[{_LOW}]+)*"
_NAME = rf"(?P<name>{_WORD}(?:[ \u00a0]{_WORD}){{0,2}})(?![\w'’\-@])"
_HS = r"[ \t\u00a0]"
# After a sentence-like cue ("my name is", "regards", ...): optional , : ! and up to two line breaks.
_AFTER_WORD = re.compile(rf"(?![\w'’\-]){_HS}*[:,!]?{_HS}*(?:\r?\n{_HS}*){{0,2}}{_NAME}")
# After a title ("Dr", "Mr.", "Frau"): an optional dot, then the name on the same line.
_AFTER_TITLE = re.compile(rf"\.?(?![\w'’\-]){_HS}*{_NAME}")
# After a field label ("Name:", "nom :"): a colon or equals sign is required.
_AFTER_LABEL = re.compile(rf"{_HS}*[:=]{_HS}*{_NAME}")

_CUES_WORD = (
    "my name is", "my name's", "name", "i'm", "i’m", "i am", "this is", "signed", "signed by", "regards", "thanks", "thank you",
    "cheers", "sincerely", "contact", "ask for", "speak to", "speak with",
    "je m'appelle", "je m’appelle", "mon nom est", "cordialement", "merci",
    "me llamo", "mi nombre es", "saludos", "atentamente", "gracias",
    "ich heiße", "ich heisse", "mein name ist", "grüße", "grüsse", "gruß", "gruss", "danke",
)
_CUES_TITLE = (
    "mr", "mrs", "ms", "miss", "dr", "prof", "mme", "mlle", "m.", "monsieur", "madame",
    "sr", "sra", "srta", "señor", "señora", "herr", "frau",
)
_CUES_LABEL = ("name", "full name", "nom", "nombre", "vorname", "nachname")


def _cue_index() -> dict[str, list[tuple[str, re.Pattern]]]:
    """First word of a cue (also with trailing punctuation) -> [(cue, regex for what follows)]."""
    index: dict[str, list[tuple[str, re.Pattern]]] = {}
    for cues, after in ((_CUES_WORD, _AFTER_WORD), (_CUES_TITLE, _AFTER_TITLE), (_CUES_LABEL, _AFTER_LABEL)):
        for cue in cues:
            first = cue.split(" ")[0]
            for variant in {first, first.rstrip(".")}:
                for punct in ("", ",", ".", ":", "!", ";"):
                    index.setdefault(variant + punct, []).append((cue, after))
    return {k: list(dict.fromkeys(v)) for k, v in index.items()}


_CUE_INDEX = _cue_index()
_CUE_TRIGGERS = frozenset(_CUE_INDEX)

# Capitalised words that follow a cue but are not names ("this is Support", "thanks, I'll").
_PERSON_STOP = frozenset("""
i it its this that these those there here he she we they you me us our my your his her their the a an
and or but so not just also very really please hello hi hey dear thanks thank regards best kind cheers
sincerely ok okay yes no sure great good fine sorry support team teams customer customers client clients
service services sales billing help helpdesk admin administrator management manager account accounts hr
legal security finance marketing operations office department desk center centre everyone all sir madam
monday tuesday wednesday thursday friday saturday sunday january february march july september october
november december today tomorrow tonight yesterday urgent important regarding re fw fwd what why how when
where who which because if as in on at for from to with about after before again now then still
correct right wrong true false new none null unknown test user guest bot assistant agent system order
orders invoice ticket case request issue problem error english french german spanish mr mrs ms miss dr prof
sr sra srta mme mlle herr frau monsieur madame señor señora le la les un une je nous vous il elle moi
bonjour équipe el los las yo usted hola equipo soporte servicio der die das ich sie wir ein eine hallo
kundendienst kunde team's your's
""".split())
_APOSTROPHE = re.compile(r"['’]")


def _person_words(name: str) -> list[str]:
    """The name's words without stop-words at the end; [] when it starts with one."""
    words = name.split()
    while words and _APOSTROPHE.split(words[-1])[0].casefold() in _PERSON_STOP:
        words.pop()
    if words and _APOSTROPHE.split(words[0])[0].casefold() in _PERSON_STOP:
        return []
    return words


def _lower_same_length(s: str) -> str:
    low = s.lower()
    if len(low) == len(s):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in s)  # "İ" lowers to two chars


# -------------------------------------------------------------------------------- the policy


def _get(obj: Any, name: str, default: Any) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() or "CUSTOM"


class _Scope:
    """Placeholders and hit counts for one turn (or one `redact_text` call)."""

    __slots__ = ("mask", "values", "counts", "hits", "n", "names")

    def __init__(self, mask: bool) -> None:
        self.mask = mask
        self.values: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}
        self.hits: Counter = Counter()
        self.n = 0
        self.names: set[str] = set()  # person names found after a cue, as written (see `_known_persons_rx`)

    def placeholder(self, det: str, tag: str, key: str) -> str:
        self.hits[det] += 1
        self.n += 1
        if self.mask:
            return f"<{tag}>"
        k = (det, key)
        ph = self.values.get(k)
        if ph is None:
            n = self.counts.get(det, 0) + 1
            self.counts[det] = n
            ph = self.values[k] = f"<{tag}_{n}>"
        return ph

    # re.sub callbacks -------------------------------------------------------------------

    def iban(self, m: re.Match) -> str:
        text = m.group()
        compact = text.replace(" ", "").replace("\u00a0", "")
        want = _IBAN_LEN.get(compact[:2])
        if want is None:
            return self.placeholder("iban", "IBAN", compact) if _mod97_ok(compact) else text
        if len(compact) < want or not _mod97_ok(compact[:want]):
            return text
        if len(compact) == want:
            return self.placeholder("iban", "IBAN", compact)
        # Longer than the country's IBAN: only the grouped form can end early, at a group boundary.
        seen = 0
        for i, ch in enumerate(text):
            if ch not in " \u00a0":
                seen += 1
                if seen == want:
                    cut = i + 1
                    break
        if text[cut] not in " \u00a0":
            return text
        return self.placeholder("iban", "IBAN", compact[:want]) + text[cut:]

    def card(self, m: re.Match) -> str:
        text = m.group()
        digits = _NON_DIGIT.sub("", text)
        if not _luhn_ok(digits) or digits.count(digits[0]) == len(digits):
            return text
        return self.placeholder("card", "CARD", digits)

    def ipv4(self, m: re.Match) -> str:
        text = m.group()
        for octet in text.split("."):
            if (len(octet) > 1 and octet[0] == "0") or int(octet) > 255:
                return text
        return self.placeholder("ip", "IP", text)

    def ipv6(self, m: re.Match) -> str:
        text = m.group()
        head = text.rsplit(":", 1)[0] if "." in text else text
        if len(_HEX.findall(head)) < 5 and "." not in text:
            return text
        try:
            addr = ipaddress.IPv6Address(text)
        except ValueError:
            return text
        return self.placeholder("ip", "IP", str(addr))

    def phone(self, m: re.Match) -> str:
        text = m.group()
        digits = _NON_DIGIT.sub("", text)
        n = len(digits)
        if text[0] == "+":
            if not 8 <= n <= 15:
                return text
        elif not 9 <= n <= 12 or _PHONE_DATE.match(text) or _PHONE_IPLIKE.fullmatch(text):
            return text
        return self.placeholder("phone", "PHONE", digits[-9:])


class Redactor:
    """Redacts turns (plain dicts) and strings under one `RedactionPolicy`.

    `policy` is a `slm_platform.config.models.RedactionPolicy`, any object (or mapping) with the
    attributes enabled / mode / detectors / custom, or None for the defaults.
    """

    def __init__(self, policy: Any = None) -> None:
        self.enabled = bool(_get(policy, "enabled", True))
        mode = _get(policy, "mode", "pseudonymize")
        if mode not in ("mask", "pseudonymize"):
            raise ValueError(f"redaction mode must be 'mask' or 'pseudonymize', not {mode!r}")
        self.mask = mode == "mask"
        detectors = _get(policy, "detectors", None)
        detectors = list(DETECTORS) if detectors is None else list(detectors)
        unknown = sorted(set(detectors) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown redaction detector(s) {unknown}; known: {list(DETECTORS)}")
        self.detectors = frozenset(detectors)
        self._email = "email" in self.detectors
        self._iban = "iban" in self.detectors
        self._card = "card" in self.detectors
        self._ip = "ip" in self.detectors
        self._phone = "phone" in self.detectors
        self._person = "person" in self.detectors
        self._digits = self._iban or self._card or self._phone
        self._custom: list[tuple[str, str, re.Pattern]] = []
        for item in _get(policy, "custom", None) or ():
            name, pattern = _get(item, "name", None), _get(item, "pattern", None)
            if not name or not pattern:
                raise ValueError(f"a custom redaction pattern needs a name and a pattern, got {item!r}")
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"custom redaction pattern {name!r} does not compile: {exc}") from None
            self._custom.append((str(name), _tag(str(name)), rx))
        self._min_len = 1 if self._custom else _MIN_LEN
        self._clean_keys: set[str] = set()  # keys the first pass left unchanged: detection is per string
        self._clean_meta: set[str] = set()  # the same for meta strings (slice values, sources, models repeat)

    # -------------------------------------------------------------------------- public API

    def redact_text(self, text: str) -> tuple[str, Counter]:
        """Redact one string (its own pseudonym scope): (redacted text, hits per detector)."""
        if not self.enabled or not isinstance(text, str):
            return text, Counter()
        scope = _Scope(self.mask)
        text = self._text(text, scope)
        if scope.names:
            text = self._known_persons(scope)(text)
        return text, scope.hits

    def redact_value(self, value: Any) -> tuple[Any, Counter]:
        """Any JSON-like value (a quarantine record, a rejected row) redacted in one pseudonym scope:
        every string, dict keys included. A new structure; the hits."""
        if not self.enabled:
            return _copy(value), Counter()
        scope = _Scope(self.mask)
        out = self._walk(value, lambda s: self._text(s, scope), self._key_pass(scope))
        if scope.names:
            known = self._known_persons(scope)
            out = self._walk(out, known, known)
        return out, scope.hits

    def redact_turn(self, turn: Mapping[str, Any]) -> tuple[dict[str, Any], Counter]:
        """A new turn with every string redacted (values and keys, `meta` too), and the hits.

        One pseudonym scope per turn, so a value gets the same placeholder everywhere in it (the
        id's placeholders are thrown away: an id with a hit becomes ``pii-<hash>``). `domain`,
        `role` and `label_source` are kept (config values, see the module docstring). The result
        shares no containers with `turn`, so later stages may set meta fields freely.
        """
        new = dict(turn)
        fields = [k for k in new if k not in _CONFIG_VALUED and k != "id"]
        if not self.enabled:
            for key in fields:
                new[key] = _copy(new[key])
            return new, Counter()
        scope = _Scope(self.mask)
        first, keys = (lambda s: self._text(s, scope)), self._key_pass(scope)
        meta_first = self._tokenwise(first, self._clean_meta)
        for key in fields:
            new[key] = self._walk(new[key], meta_first if key == "meta" else first, keys)
        tid = new.get("id")
        spaced = red_id = None
        if type(tid) is str and not _HASHED_ID.fullmatch(tid):
            spaced = _ID_SEPARATORS.sub(" ", tid)
            red_id = self._text(spaced, scope)
        if scope.names:  # a name found after a cue ("my name is X") is X everywhere in the turn
            known = self._known_persons(scope)
            meta_known = self._tokenwise(known, None)
            for key in fields:
                new[key] = self._walk(new[key], meta_known if key == "meta" else known, known)
            if spaced is not None:
                red_id = known(red_id)
        if spaced is not None and red_id != spaced:
            new["id"] = "pii-" + stable_hash(tid)
        return new, scope.hits

    def redact_turns(self, turns: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
        """Redact many turns; the hits summed over all of them."""
        out, hits = [], Counter()
        for turn in turns:
            t, h = self.redact_turn(turn)
            out.append(t)
            hits.update(h)
        return out, hits

    # ---------------------------------------------------------------------------- internals

    def _tokenwise(self, text_pass: Callable[[str], str], clean: set[str] | None) -> Callable[[str], str]:
        """`text_pass` for `meta`: a whitespace-free string (an id from another system) that has a hit
        only once its separators read as spaces is replaced whole by ``pii-<hash>``. `clean` (first
        pass only: it does not depend on the scope) remembers strings found clean; timestamps are."""
        min_len = self._min_len

        def token(s: str) -> str:
            if clean is not None and s in clean:
                return s
            if _TIMESTAMP.fullmatch(s):
                return s
            out = text_pass(s)
            if _HASHED_ID.fullmatch(out):
                return out
            if len(out) >= min_len and not _WHITESPACE.search(out):  # on what the text pass left: idempotent
                spaced = _ID_SEPARATORS.sub(" ", out)
                if spaced != out and text_pass(spaced) != spaced:
                    return "pii-" + stable_hash(s)
            if clean is not None and out == s:
                if len(clean) >= _KEY_CACHE:
                    clean.clear()
                clean.add(s)
            return out

        return token

    def _key_pass(self, scope: _Scope) -> Callable[[str], str]:
        """The first pass for dict keys: a key seen clean before is clean again (no regex per key)."""
        clean = self._clean_keys

        def keys(key: str) -> str:
            if key in clean:
                return key
            before = scope.n
            out = self._text(key, scope)
            if scope.n == before:  # no hit: the text is unchanged and no name was learned
                if len(clean) >= _KEY_CACHE:
                    clean.clear()
                clean.add(key)
            return out

        return keys

    def _walk(self, value: Any, text_pass: Callable[[str], str], key_pass: Callable[[str], str]) -> Any:
        """`text_pass` on every string and `key_pass` on every key in nested dicts/lists (a new structure)."""
        t = type(value)
        if t is str:
            return text_pass(value)
        if t is dict:
            walk = self._walk
            return {(key_pass(k) if type(k) is str else k): walk(v, text_pass, key_pass) for k, v in value.items()}
        if t is list:
            walk = self._walk
            return [walk(v, text_pass, key_pass) for v in value]
        if t is int and (value >= _BIG_INT or value <= -_BIG_INT):
            digits = str(value)
            out = text_pass(digits)
            return value if out == digits else out
        if isinstance(value, str):
            return text_pass(str(value))
        if isinstance(value, Mapping):
            return {(key_pass(k) if isinstance(k, str) else k): self._walk(v, text_pass, key_pass)
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v, text_pass, key_pass) for v in value]
        return value

    @staticmethod
    def _known_persons(scope: _Scope) -> Callable[[str], str]:
        """The second pass: every name this scope found after a cue, wherever else it appears (a tool
        call's `traveler_name`, a label), as whole words, any spacing, any case, in strings of any
        length. A one-word name only where capitalised: "Will" the name, not "will" the verb."""
        known = _known_names_rx(tuple(sorted(scope.names, key=lambda name: (-len(name), name))))

        def repl(m: re.Match) -> str:
            text = m.group()
            if not text[0].isupper() and len(text.split()) == 1:
                return text
            return scope.placeholder("person", "PERSON", " ".join(text.split()).casefold())

        return lambda s: known.sub(repl, s)

    def _text(self, s: str, scope: _Scope) -> str:
        if len(s) < self._min_len:
            return s
        for _ in range(_MAX_PASSES):
            before = scope.n
            s = self._pass(s, scope)
            if scope.n == before:
                break
        return s

    def _pass(self, s: str, scope: _Scope) -> str:
        if self._custom:
            s = self._apply_custom(s, scope)
            if len(s) < _MIN_LEN:
                return s
        if self._email and "@" in s:
            s = self._emails(s, scope)
        has7 = self._digits and _HAS7.match(s) is not None
        if has7:
            if self._iban:
                s = _IBAN.sub(scope.iban, s)
            if self._card and _HAS13.match(s):
                s = _CARD.sub(scope.card, s)
        if self._ip:
            if "::" in s or s.count(":") >= 6:  # before IPv4: "::ffff:192.0.2.1" is one address
                s = _IPV6.sub(scope.ipv6, s)
            if "." in s and _HAS4.match(s):
                s = _IPV4.sub(scope.ipv4, s)
        if has7 and self._phone:
            s = _PHONE.sub(scope.phone, s)
        if self._person and not s.islower():
            s = self._persons(s, scope)
        return s

    def _apply_custom(self, s: str, scope: _Scope) -> str:
        for det, tag, rx in self._custom:
            def repl(m: re.Match, det=det, tag=tag) -> str:
                text = m.group()
                return scope.placeholder(det, tag, text) if text else text
            if "<" in s and _PLACEHOLDER_SPLIT.search(s):
                parts = _PLACEHOLDER_SPLIT.split(s)  # odd indexes are placeholders: never touched
                s = "".join(p if i % 2 else rx.sub(repl, p) for i, p in enumerate(parts))
            else:
                s = rx.sub(repl, s)
        return s

    def _emails(self, s: str, scope: _Scope) -> str:
        out: list[str] = []
        last = 0
        at = s.find("@")
        while at != -1:
            nxt = at + 1
            if at > last and s[at - 1] in _EMAIL_LOCAL:
                rev = s[max(last, at - 64):at][::-1]
                local = _EMAIL_LOCAL_REV.match(rev)
                start = at - local.end()
                while start < at and s[start] == ".":  # a local part does not start with a dot
                    start += 1
                dom = _EMAIL_DOMAIN.match(s, at + 1) if start < at else None
                if dom is not None:
                    out.append(s[last:start])
                    out.append(scope.placeholder("email", "EMAIL", s[start:dom.end()].lower()))
                    last = nxt = dom.end()
            at = s.find("@", nxt)
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _persons(self, s: str, scope: _Scope) -> str:
        low = _lower_same_length(s)
        triggers = _CUE_TRIGGERS.intersection(low.split())
        if not triggers:
            return s
        spans: list[tuple[int, int, str]] = []
        seen_cues: set[tuple[str, re.Pattern]] = set()
        for trig in triggers:
            for cue, after in _CUE_INDEX[trig]:
                if (cue, after) in seen_cues:
                    continue
                seen_cues.add((cue, after))
                i = low.find(cue)
                while i != -1:
                    if i == 0 or not (s[i - 1].isalnum() or s[i - 1] in "_.'’"):
                        m = after.match(s, i + len(cue))
                        if m is not None:
                            words = _person_words(m.group("name"))
                            if words:
                                start = m.start("name")
                                end = start
                                for w in words:  # the kept words, as written (single spaces)
                                    end = s.index(w, end) + len(w)
                                spans.append((start, end, s[start:end]))
                    i = low.find(cue, i + 1)
        if not spans:
            return s
        spans.sort()
        out: list[str] = []
        last = 0
        for start, end, name in spans:
            if start < last:
                continue
            out.append(s[last:start])
            name = " ".join(name.split())
            scope.names.add(name)
            out.append(scope.placeholder("person", "PERSON", name.casefold()))
            last = end
        out.append(s[last:])
        return "".join(out)


@functools.lru_cache(maxsize=4096)
def _known_names_rx(names: tuple[str, ...]) -> re.Pattern:
    """The regex of `Redactor._known_persons`, longest name first. Cached: compiling it (IGNORECASE,
    Unicode classes) costs more than redacting the turn, and names repeat across turns."""
    alternatives = (r"\s+".join(re.escape(w) for w in name.split()) for name in names)
    return re.compile(r"(?<![\w'’-])(?:" + "|".join(alternatives) + r")(?![\w'’-])", re.IGNORECASE)


def _copy(value: Any) -> Any:
    """A copy of nested dicts/lists (leaves shared: they are immutable scalars in a turn)."""
    t = type(value)
    if t is dict:
        return {k: _copy(v) for k, v in value.items()}
    if t is list:
        return [_copy(v) for v in value]
    return value


_DEFAULT = Redactor()


def redact_text(text: str) -> tuple[str, Counter]:
    """`Redactor().redact_text` with the default policy (all detectors, pseudonymize)."""
    return _DEFAULT.redact_text(text)


if __name__ == "__main__":  # a quick throughput figure: python -m slm_platform.data.redaction
    import time

    sample = {
        "id": "t1", "domain": "support", "role": "triage", "label_source": "teacher",
        "input": {"messages": [
            {"role": "system", "content": "You are a support triage assistant. Reply with JSON only."},
            {"role": "user", "content": (
                "Hi, my name is Anna Schmidt and I ordered a pair of shoes last week (order #48213). "
                "They arrived damaged on 2024-04-01 at 10:30. Please call me on +44 20 7946 0958 or "
                "write to anna.schmidt@example.com. I paid with my usual card and would like the "
                "refund to go back there. Thanks, Anna")}]},
        "output": {"name": "create_ticket", "arguments": {"email": "anna.schmidt@example.com",
                                                          "priority": "high", "summary": "Damaged shoes"}},
        "labels": {"teacher": {"name": "create_ticket", "arguments": {"email": "anna.schmidt@example.com",
                                                                      "priority": "high"}}},
        "meta": {"captured_at": "2024-04-01T00:00:00Z", "source": "capture", "slice": {"lang": "en"}},
    }
    plain = {**sample, "input": {"messages": [{"role": "user", "content": (
        "Hello, the export of my monthly report fails with a timeout after about two minutes. It "
        "worked fine last week. I tried again this morning from another browser and got the same "
        "error. Could you look into it? The report is the one with all regions and the new columns.")}]},
        "output": {"category": "bug", "priority": "medium"}, "labels": {"teacher": {"category": "bug"}}}
    red = Redactor()
    for name, turn in (("with PII", sample), ("no PII", plain)):
        n = 20000
        t0 = time.process_time()  # CPU time: not skewed by other processes on a busy machine
        for _ in range(n):
            red.redact_turn(turn)
        dt = time.process_time() - t0
        print(f"{name}: {n / dt:,.0f} turns/s of CPU ({dt / n * 1e6:.1f} us/turn)")
    print(red.redact_turn(sample)[0]["input"]["messages"][1]["content"])
