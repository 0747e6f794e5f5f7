"""The floor for `support_triage`: a keyword and regex classifier, deliberately simple.

It is what a team writes in an afternoon before it has a model, and it is wrong in the ways such
rules are wrong: the first category rule that fires wins (multi-issue tickets, "refund" inside a
how-to question, "cancelled" inside a billing complaint), priority follows shouted words
("URGENT" on a feature request), the product is the first product name in the text (aliases like
"the desktop sync app" are missed), the language comes from greetings and a few function words
(mixed-language tickets fool it), and typos or paraphrases make keywords miss. It always answers
with a schema-valid object.

Speed: the text is lowercased and split into words once; single keywords are set lookups and
only multi-word phrases use (precompiled) regular expressions.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-zà-öø-ÿ0-9']+")


def _rule(words: str, phrases: str | None = None) -> tuple[frozenset[str], re.Pattern | None]:
    return frozenset(words.split()), (re.compile(phrases) if phrases else None)


# first rule that matches wins; the order is part of the (imperfect) logic
_CATEGORY_RULES = [
    ("security", _rule("hacked compromised phishing suspicious unauthorized piraté hackeado gehackt",
                       r"data leak|shared publicly|ex-employee")),
    ("cancellation", _rule("cancel cancelled canceled cancellation downgrade contract résilier kündigen",
                           r"close my account|won't renew|fermer mon compte|cerrar mi cuenta")),
    ("billing", _rule("charged billed invoice refund refunded bill billing payment statement vat "
                      "card facture rembourser factura reembolso rechnung")),
    ("account", _rule("login password locked 2fa username workspace authenticator admin "
                      "accounts compte contraseña passwort konto", r"log ?in|mot de passe|sign ?in|two-factor|email address|delete my account")),
    ("bug", _rule("crash crashing crashes error broken down slow forever lags blank freezes hangs missing empty "
                  "erreur lent plante fehlermeldung langsam", r"doesn't work|stopped working|not working|is down")),
    ("feature_request", _rule("feature suggestion suggestions sugerencia vorschlag",
                              r"would be great|please add|consider adding|any plans|would love")),
]
_DEFAULT_CATEGORY = "how_to"

_URGENT = _rule("urgent asap outage hacked compromised immediately dringend urgente ausgefallen parados",
                r"is down|nobody can|whole company")
_HIGH = _rule("can't cannot unable locked twice refund crash crashing missing declined failing lost blank missed "
              "blocked losing", r"third time|two times")
_HUMAN = _rule("human agent manager supervisor refund gdpr lawyer", r"real person|call me|third time")

# product words; when several products are named, the one named first in the text wins
_PRODUCTS = [
    ("drive", frozenset("drive lumiodrive".split())),
    ("mail", frozenset("mail lumiomail webmail".split())),
    ("calendar", frozenset("calendar lumiocalendar".split())),
    ("pay", frozenset("pay lumiopay".split())),
    ("assist", frozenset("assist ai".split())),
]

_LANG = [
    ("fr", frozenset("bonjour merci cordialement je nous".split())),
    ("es", frozenset("hola gracias saludos cuenta".split())),
    ("de", frozenset("hallo danke grüße ich bitte".split())),
]


def _hit(rule: tuple[frozenset[str], re.Pattern | None], words: set[str], low: str) -> bool:
    keywords, phrases = rule
    return not keywords.isdisjoint(words) or (phrases is not None and phrases.search(low) is not None)


def _text(input: dict) -> str:
    messages = input.get("messages") if isinstance(input, dict) else None
    if not isinstance(messages, list):
        return ""
    return "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict) and m.get("role") == "user")


def triage(input: dict) -> dict | None:
    """Classify one ticket: {category, priority, product, needs_human, language}."""
    low = _text(input).lower()
    words = set(_WORD.findall(low))

    category = _DEFAULT_CATEGORY
    for name, rule in _CATEGORY_RULES:
        if _hit(rule, words, low):
            category = name
            break

    if category == "security" or _hit(_URGENT, words, low):
        priority = "urgent"
    elif _hit(_HIGH, words, low):
        priority = "high"
    elif category in ("how_to", "feature_request"):
        priority = "low"
    else:
        priority = "medium"

    named = [(name, kws & words) for name, kws in _PRODUCTS if not kws.isdisjoint(words)]
    if not named:
        product = "general"
    elif len(named) == 1:
        product = named[0][0]
    else:  # substring position: "mail" inside "email" counts too (one of the oracle's flaws)
        product = min(named, key=lambda nk: min(low.find(k) for k in nk[1]))[0]

    language = "en"
    for lang, markers in _LANG:
        if not markers.isdisjoint(words):
            language = lang
            break

    needs_human = category in ("security", "cancellation") or priority == "urgent" or _hit(_HUMAN, words, low)
    return {"category": category, "priority": priority, "product": product, "needs_human": needs_human,
            "language": language}
