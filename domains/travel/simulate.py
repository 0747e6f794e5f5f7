"""Seeded simulator of travel-planner conversations with hidden ground truth.

Every user turn yields a `plan_turn` Turn (slot updates + tool requests + render intent); a turn
whose truth requests a tool also yields a `call_tool` Turn (the first requested call). Both count
toward `n`. Turns are in capture format (`labels.capture` = truth; `--gold` moves it to
`labels.gold`). The truth is a deterministic function of what the input shows: the last user
message, the slot state (which carries `today`, the reference date for "next friday"), and the
previous assistant message (pending question, options shown).

    python domains/travel/simulate.py --n 1000 --seed 1 [--day 2025-06-12] [--drift 0.3] [--out F] [--gold]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from typing import Any, Iterator

DOMAIN = "travel"
MAX_HISTORY = 4  # prior messages kept in the input (prompts must fit the recipe's max_seq_len) ...
MAX_HISTORY_CHARS = 360  # ... and at most this much of their text (older ones dropped first)
EXACT_DUP_RATE = 0.03
NEAR_DUP_RATE = 0.02
NEAR_DUP_EDITS = ("Hi, {}", "ok so {}", "{} please", "{}!!", "{} :)", "hmm {}")

# --- vocabulary ---------------------------------------------------------------------------------
# canonical name -> IATA-like code. The truth always uses the canonical (English) name.
BASE_CITIES = {
    "Lisbon": "LIS", "Porto": "OPO", "Madrid": "MAD", "Barcelona": "BCN", "Paris": "CDG",
    "London": "LHR", "Berlin": "BER", "Munich": "MUC", "Vienna": "VIE", "Prague": "PRG",
    "Rome": "FCO", "Amsterdam": "AMS", "Dublin": "DUB", "Athens": "ATH", "New York": "JFK",
    "Boston": "BOS", "Chicago": "ORD", "San Francisco": "SFO", "Toronto": "YYZ", "Tokyo": "HND",
}
# destinations that appear with drift (and that the oracle's city list does not know)
DRIFT_CITIES = {
    "Tbilisi": "TBS", "Da Nang": "DAD", "Medellin": "MDE", "Tirana": "TIA", "Almaty": "ALA",
    "Oaxaca": "OAX", "Cape Town": "CPT", "Reykjavik": "KEF", "Marrakesh": "RAK", "Hanoi": "HAN",
}
ALIASES = {  # how speakers of each language tend to write the city
    "en": {"New York": "NYC", "San Francisco": "SF", "Munich": "München", "Prague": "Praha", "Lisbon": "Lisboa"},
    "es": {"London": "Londres", "Lisbon": "Lisboa", "Munich": "Múnich", "Vienna": "Viena", "Prague": "Praga",
           "Rome": "Roma", "Athens": "Atenas", "New York": "Nueva York", "Tokyo": "Tokio", "Marrakesh": "Marrakech"},
    "fr": {"London": "Londres", "Lisbon": "Lisbonne", "Vienna": "Vienne", "Athens": "Athènes",
           "Barcelona": "Barcelone", "Marrakesh": "Marrakech", "Hanoi": "Hanoï"},
    "de": {"Lisbon": "Lissabon", "Munich": "München", "Vienna": "Wien", "Prague": "Prag", "Rome": "Rom",
           "Athens": "Athen", "Tokyo": "Tokio", "Marrakesh": "Marrakesch"},
}
COUNTRIES = ["Japan", "Canada", "the US", "Georgia", "Vietnam", "Colombia", "Albania", "Morocco", "Iceland"]

FIRST = ["Anna", "Lukas", "Maria", "James", "Sofia", "Mateo", "Chloe", "Noah", "Aiko", "Omar", "Ines",
         "Pierre", "Hannah", "Diego", "Priya", "Liam", "Elena", "Jonas", "Camille", "Tomasz"]
LAST = ["Schmidt", "Silva", "Garcia", "Smith", "Rossi", "Dubois", "Müller", "Tanaka", "Haddad", "Novak",
        "Costa", "Nguyen", "Patel", "Kowalski", "Moreau", "Fischer", "Lopez", "Brown", "Ferreira", "Jensen"]
MAIL_HOSTS = ["gmail.com", "outlook.com", "example.org", "web.de", "yahoo.fr", "proton.me"]
AIRLINES = ["TAP", "Iberia", "Lufthansa", "Air France", "KLM", "easyJet", "Ryanair", "Delta", "United", "ANA"]

CABINS = ("economy", "premium_economy", "business", "first")
AREAS = ("city_center", "old_town", "airport", "beach")
CATEGORIES = ("museum", "restaurant", "nightlife", "park", "beach", "landmark")
CURRENCIES = ("USD", "EUR", "GBP")

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
           "octubre", "noviembre", "diciembre"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
           "octobre", "novembre", "décembre"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
}
WEEKDAYS = {  # Monday first (date.weekday())
    "en": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
}

# Phrase tables. Placeholders: {c} city, {n} number, {a} amount, {id} option id, {k} option number.
EN = {
    "greet": ["hi", "hello!", "hey there", "good morning", "hi, I'm planning a trip", "hey :)"],
    "thanks": ["thanks!", "great, thank you", "perfect", "cheers", "ok thx", "awesome, thanks a lot"],
    "summarize": ["what do we have so far?", "can you recap?", "summary please", "remind me what we planned",
                  "so what's the plan now?"],
    "oos": ["do I need a visa for {country}?", "what's the weather like in {c} in {month}?",
            "can you recommend travel insurance?", "how do I get an eSIM there?",
            "is tap water safe to drink in {c}?"],
    "fl_open": ["I need a flight", "Looking for flights", "Can you find me a flight", "find me flights",
                "I want to fly", "We need to fly", "Get me a flight", "search flights", "any flights"],
    "ht_open": ["I need a hotel", "Find me a hotel", "Looking for a place to stay", "Can you find accommodation",
                "We need a hotel", "search hotels", "need somewhere to stay"],
    "both_open": ["I need a flight and a hotel", "Plan flights and a hotel for me", "Looking for flight + hotel",
                  "can you sort out flights and a hotel", "we need flights and accommodation"],
    "origin": ["from {c}", "from {c}", "out of {c}", "leaving from {c}"],
    "dest": ["to {c}", "to {c}", "going to {c}"],
    "ht_city": ["in {c}", "in {c}", "somewhere in {c}"],
    "nights": ["for {n} nights", "staying {n} nights", "{n} nights"],
    "week": ["for a week", "for one week"],
    "ret_date": ["returning {d}", "back {p}", "coming back {p}"],
    "ht_until": ["until {d}", "checking out {p}", "till {d}"],
    "ht_from": ["from {d}", "checking in {p}", "arriving {p}"],
    "ret_rel": ["back on the {o}", "returning on the {o}"],
    "ht_rel": ["until the {o}", "checking out on the {o}"],
    "closers": ["", "", "", " please", " thanks", "?", " pls", " asap", "!"],
    "inform_join": [", ", " and ", ", ", ". "],
    "inform_city_bare": ["{c}", "{c} please", "it's {c}"],
    "corr_dest": ["actually make it {c}", "change the destination to {c}", "sorry, I meant {c}",
                  "hmm, let's do {c} instead", "can we switch to {c}?"],
    "corr_depart": ["actually leave {p} instead", "can we move it to {d}?", "change the date to {d}",
                    "make the departure {d}"],
    "corr_nights": ["make it {n} nights instead", "actually {n} nights", "let's stay {n} nights"],
    "corr_travelers": ["make that {n} people", "actually there are {n} of us", "we're {n} now"],
    "corr_cabin": ["on second thought, {cab}", "let's do {cab} instead", "switch to {cab}"],
    "corr_area": ["actually somewhere {area} instead", "prefer something {area}", "can it be {area}?"],
    "book_id": ["book {id}", "I'll take {id}", "let's go with {id}", "{id} please", "go ahead with {id}"],
    "book_ord": ["let's go with the {ord} one", "option {k} please", "the {ord} one looks good, book it",
                 "I'll take number {k}", "book the {ord} option"],
    "book_cheap": ["book the cheapest one", "the cheapest please", "go with the cheapest"],
    "book_last": ["the last one please", "book the last option"],
    "with_contact": [", name {name}, email {email}", " for {name} ({email})", ". I'm {name}, {email}"],
    "contact_full": ["my name is {name}, email {email}", "{name}, {email}", "name: {name} / email: {email}",
                     "It's {name}. You can reach me at {email}", "my name is {name} and my email is {email}"],
    "phone_add": [", phone {phone}", " or call {phone}", ", mobile {phone}"],
    "contact_name": ["my name is {name}", "it's for {name}", "the traveler is {name}"],
    "contact_email": ["{email}", "my email is {email}", "email: {email}", "send it to {email}"],
    "pl_q": ["what are the best {cat} in {c}?", "any good {cat} in {c}?", "recommend some {cat} in {c}",
             "things to do in {c}? I love {cat}", "where can I find {cat} in {c}?"],
    "pl_there": ["any good {cat} there?", "what about {cat} there?", "recommend some {cat} nearby"],
    "pl_nocity": ["any {cat} you'd recommend?", "I'm into {cat}, ideas?"],
    "cat": {"museum": ["museums", "art galleries"], "restaurant": ["restaurants", "places to eat", "food spots"],
            "nightlife": ["bars", "nightlife", "clubs"], "park": ["parks", "gardens"], "beach": ["beaches"],
            "landmark": ["sights", "landmarks", "famous sights"]},
    "travelers": {1: ["just me", "solo trip", "for 1 person", "only me"],
                  2: ["me and my wife", "me and my husband", "my partner and I", "2 adults", "two of us",
                      "for 2 people"],
                  3: ["the three of us", "3 people", "me and two friends", "for 3 adults"],
                  4: ["a family of 4", "me, my wife and our 2 kids", "4 people", "four of us"],
                  5: ["5 people", "a group of 5"], 6: ["6 people", "a group of 6"]},
    "budget": {"USD": ["under {a} bucks", "no more than ${a}", "max {a} dollars", "budget is ${a}"],
               "EUR": ["max {a} euros", "under €{a}", "below {a} EUR"],
               "GBP": ["budget £{a}", "under {a} pounds"]},
    "cabin": {"economy": ["economy", "coach", "in economy"], "premium_economy": ["premium economy"],
              "business": ["business class", "in business"], "first": ["first class"]},
    "area": {"city_center": ["downtown", "in the city center", "somewhere central"],
             "old_town": ["in the old town", "near the historic center"],
             "airport": ["near the airport", "close to the airport"], "beach": ["by the beach", "near the beach"]},
    "ord": ["first", "second", "third"],
}
ES = {
    "greet": ["hola", "buenas", "hola, estoy planeando un viaje"],
    "thanks": ["gracias!", "perfecto, gracias", "genial, muchas gracias"],
    "summarize": ["¿me haces un resumen?", "¿qué tenemos hasta ahora?"],
    "oos": ["¿necesito visado para {country}?", "¿qué tiempo hace en {c} en {month}?"],
    "fl_open": ["Necesito un vuelo", "Busco vuelos", "Quiero volar", "busca vuelos"],
    "ht_open": ["Busco hotel", "Necesito un hotel", "busca alojamiento"],
    "both_open": ["Necesito vuelo y hotel", "Busco vuelos y hotel"],
    "origin": ["desde {c}", "de {c}", "saliendo de {c}"],
    "dest": ["a {c}", "a {c}", "con destino a {c}"],
    "ht_city": ["en {c}"],
    "nights": ["por {n} noches", "{n} noches"],
    "week": ["por una semana"],
    "ret_date": ["volviendo {p}", "con vuelta {p}"],
    "ht_until": ["hasta {p}"],
    "ht_from": ["desde {p}", "entrando {p}"],
    "ret_rel": ["volviendo el día {o}"],
    "ht_rel": ["hasta el día {o}"],
    "closers": ["", "", " por favor", "?", " gracias"],
    "inform_join": [", ", " y "],
    "inform_city_bare": ["{c}", "en {c}"],
    "corr_dest": ["mejor a {c}", "cambia el destino a {c}", "perdón, quería decir {c}"],
    "corr_depart": ["mejor salir {p}", "cambia la fecha a {p}"],
    "corr_nights": ["mejor {n} noches"],
    "corr_travelers": ["somos {n} personas", "al final somos {n}"],
    "corr_cabin": ["mejor en {cab}"],
    "corr_area": ["mejor {area}"],
    "book_id": ["reserva {id}", "me quedo con {id}", "quiero {id}"],
    "book_ord": ["me quedo con la opción {k}", "reserva la opción {k}"],
    "book_cheap": ["reserva la más barata"],
    "book_last": ["la última, por favor"],
    "with_contact": [", a nombre de {name}, correo {email}"],
    "contact_full": ["me llamo {name}, mi correo es {email}", "{name}, {email}"],
    "phone_add": [", teléfono {phone}"],
    "contact_name": ["me llamo {name}", "a nombre de {name}"],
    "contact_email": ["mi correo es {email}", "{email}"],
    "pl_q": ["¿qué {cat} recomiendas en {c}?", "busco {cat} en {c}"],
    "pl_there": ["¿y {cat} por allí?"],
    "pl_nocity": ["¿algún sitio de {cat}?"],
    "cat": {"museum": ["museos"], "restaurant": ["restaurantes"], "nightlife": ["bares"], "park": ["parques"],
            "beach": ["playas"], "landmark": ["monumentos"]},
    "travelers": {1: ["solo yo", "para 1 persona"], 2: ["mi esposa y yo", "para 2 personas", "somos dos"],
                  3: ["para 3 personas", "somos tres"], 4: ["para 4 personas", "somos cuatro"],
                  5: ["para 5 personas"], 6: ["para 6 personas"]},
    "budget": {"USD": ["menos de {a} dólares"], "EUR": ["menos de {a} euros", "máximo {a} euros"],
               "GBP": ["menos de {a} libras"]},
    "cabin": {"economy": ["en turista", "clase económica"], "premium_economy": ["en turista premium"],
              "business": ["en clase business", "en business"], "first": ["en primera"]},
    "area": {"city_center": ["en el centro"], "old_town": ["en el casco antiguo"],
             "airport": ["cerca del aeropuerto"], "beach": ["cerca de la playa"]},
    "ord": ["primera", "segunda", "tercera"],
}
FR = {
    "greet": ["bonjour", "salut", "bonjour, je prépare un voyage"],
    "thanks": ["merci !", "parfait, merci", "super, merci beaucoup"],
    "summarize": ["vous pouvez résumer ?", "on en est où ?"],
    "oos": ["faut-il un visa pour {country} ?", "quel temps fait-il à {c} en {month} ?"],
    "fl_open": ["Je cherche un vol", "Il me faut un vol", "cherche des vols"],
    "ht_open": ["Je cherche un hôtel", "Il me faut un hôtel"],
    "both_open": ["Il me faut un vol et un hôtel", "Je cherche vol + hôtel"],
    "origin": ["de {c}", "au départ de {c}"],
    "dest": ["pour {c}", "à destination de {c}"],
    "ht_city": ["à {c}"],
    "nights": ["pour {n} nuits", "{n} nuits"],
    "week": ["pour une semaine"],
    "ret_date": ["retour {p}"],
    "ht_until": ["jusqu'au {d}"],
    "ht_from": ["arrivée {p}"],
    "ret_rel": ["retour le {o}"],
    "ht_rel": ["jusqu'au {o}"],
    "closers": ["", "", " svp", " merci", " ?"],
    "inform_join": [", ", " et "],
    "inform_city_bare": ["{c}", "à {c}"],
    "corr_dest": ["finalement plutôt {c}", "changez la destination pour {c}"],
    "corr_depart": ["plutôt partir {p}", "changez la date : {p}"],
    "corr_nights": ["plutôt {n} nuits"],
    "corr_travelers": ["nous serons {n}", "finalement on est {n}"],
    "corr_cabin": ["plutôt {cab}"],
    "corr_area": ["plutôt {area}"],
    "book_id": ["réservez {id}", "je prends {id}"],
    "book_ord": ["je prends l'option {k}", "réservez l'option {k}"],
    "book_cheap": ["le moins cher, svp"],
    "book_last": ["le dernier, svp"],
    "with_contact": [", au nom de {name}, email {email}"],
    "contact_full": ["je m'appelle {name}, mon email est {email}", "{name}, {email}"],
    "phone_add": [", tél {phone}"],
    "contact_name": ["je m'appelle {name}", "au nom de {name}"],
    "contact_email": ["mon email : {email}", "{email}"],
    "pl_q": ["quels {cat} visiter à {c} ?", "des {cat} sympas à {c} ?"],
    "pl_there": ["et des {cat} là-bas ?"],
    "pl_nocity": ["des {cat} à conseiller ?"],
    "cat": {"museum": ["musées"], "restaurant": ["restaurants"], "nightlife": ["bars"], "park": ["parcs"],
            "beach": ["plages"], "landmark": ["monuments"]},
    "travelers": {1: ["juste moi", "pour 1 personne"], 2: ["ma femme et moi", "pour 2 personnes"],
                  3: ["pour 3 personnes", "nous sommes trois"], 4: ["pour 4 personnes"],
                  5: ["pour 5 personnes"], 6: ["pour 6 personnes"]},
    "budget": {"USD": ["moins de {a} dollars"], "EUR": ["moins de {a} euros", "max {a} €"],
               "GBP": ["moins de {a} livres"]},
    "cabin": {"economy": ["en éco", "en classe économique"], "premium_economy": ["en premium éco"],
              "business": ["en classe affaires", "en business"], "first": ["en première"]},
    "area": {"city_center": ["au centre-ville"], "old_town": ["dans la vieille ville"],
             "airport": ["près de l'aéroport"], "beach": ["près de la plage"]},
    "ord": ["première", "deuxième", "troisième"],
}
DE = {
    "greet": ["hallo", "guten Tag", "hallo, ich plane eine Reise"],
    "thanks": ["danke!", "super, danke", "perfekt, vielen Dank"],
    "summarize": ["kannst du das zusammenfassen?", "was haben wir bisher?"],
    "oos": ["brauche ich ein Visum für {country}?", "wie ist das Wetter in {c} im {month}?"],
    "fl_open": ["Ich brauche einen Flug", "Suche Flüge", "Ich möchte fliegen", "such mir einen Flug"],
    "ht_open": ["Ich suche ein Hotel", "Brauche ein Hotel", "such mir eine Unterkunft"],
    "both_open": ["Ich brauche Flug und Hotel", "Suche Flüge und Hotel"],
    "origin": ["von {c}", "ab {c}"],
    "dest": ["nach {c}", "nach {c}"],
    "ht_city": ["in {c}"],
    "nights": ["für {n} Nächte", "{n} Nächte"],
    "week": ["für eine Woche"],
    "ret_date": ["zurück {p}", "Rückflug {p}"],
    "ht_until": ["bis zum {d}"],
    "ht_from": ["Anreise {p}"],
    "ret_rel": ["zurück am {o}."],
    "ht_rel": ["bis zum {o}."],
    "closers": ["", "", " bitte", " danke", "?"],
    "inform_join": [", ", " und "],
    "inform_city_bare": ["{c}", "in {c}"],
    "corr_dest": ["doch lieber {c}", "Ziel bitte auf {c} ändern"],
    "corr_depart": ["lieber {p} los", "Datum bitte auf {d} ändern"],
    "corr_nights": ["lieber {n} Nächte"],
    "corr_travelers": ["wir sind {n} Personen", "doch {n} Personen"],
    "corr_cabin": ["lieber {cab}"],
    "corr_area": ["lieber {area}"],
    "book_id": ["buche {id}", "ich nehme {id}"],
    "book_ord": ["ich nehme Option {k}", "buche Option {k}"],
    "book_cheap": ["das günstigste bitte"],
    "book_last": ["das letzte bitte"],
    "with_contact": [", auf den Namen {name}, E-Mail {email}"],
    "contact_full": ["ich heiße {name}, meine E-Mail ist {email}", "{name}, {email}"],
    "phone_add": [", Tel. {phone}"],
    "contact_name": ["ich heiße {name}", "auf den Namen {name}"],
    "contact_email": ["meine E-Mail: {email}", "{email}"],
    "pl_q": ["welche {cat} lohnen sich in {c}?", "gute {cat} in {c}?"],
    "pl_there": ["und {cat} dort?"],
    "pl_nocity": ["kannst du {cat} empfehlen?"],
    "cat": {"museum": ["Museen"], "restaurant": ["Restaurants"], "nightlife": ["Bars"], "park": ["Parks"],
            "beach": ["Strände"], "landmark": ["Sehenswürdigkeiten"]},
    "travelers": {1: ["nur ich", "für 1 Person"], 2: ["meine Frau und ich", "für 2 Personen", "zu zweit"],
                  3: ["für 3 Personen", "zu dritt"], 4: ["für 4 Personen", "zu viert"],
                  5: ["für 5 Personen"], 6: ["für 6 Personen"]},
    "budget": {"USD": ["unter {a} Dollar"], "EUR": ["maximal {a} Euro", "unter {a} Euro"],
               "GBP": ["unter {a} Pfund"]},
    "cabin": {"economy": ["Economy"], "premium_economy": ["Premium Economy"],
              "business": ["in der Business Class", "Business"], "first": ["erste Klasse"]},
    "area": {"city_center": ["im Zentrum"], "old_town": ["in der Altstadt"],
             "airport": ["in Flughafennähe"], "beach": ["am Strand"]},
    "ord": ["erste", "zweite", "dritte"],
}
PHRASES = {"en": EN, "es": ES, "fr": FR, "de": DE}

# What the assistant says when a search lacks something (the truth reads it back).
FIELD_LABEL = {"flights": {"origin": "departure city", "destination": "destination", "depart_date": "departure date"},
               "hotels": {"destination": "city", "depart_date": "check-in date", "return_date": "check-out date"}}
REQUIRED = {"flights": ("origin", "destination", "depart_date"),
            "hotels": ("destination", "depart_date", "return_date")}


def _ordinal_en(d: int) -> str:
    if 10 <= d % 100 <= 20:
        return f"{d}th"
    return f"{d}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th') }"


class _Dates:
    """Date phrases whose meaning is fixed by a reference date (the rules are in the prompt)."""

    @staticmethod
    def month_day(lang: str, d: dt.date, rng: random.Random) -> str:
        m = MONTHS[lang][d.month - 1]
        if lang == "en":
            return rng.choice((f"{m} {d.day}", f"{d.day} {m}", f"{m} {_ordinal_en(d.day)}", f"{m[:3]} {d.day}"))
        if lang == "es":
            return f"{d.day} de {m}"
        if lang == "fr":
            return f"{'1er' if d.day == 1 else d.day} {m}"
        return f"{d.day}. {m}"

    @classmethod
    def depart(cls, lang: str, today: dt.date, target: dt.date, rng: random.Random) -> tuple[str, str]:
        """(bare, with preposition) for a departure / check-in date relative to today."""
        delta = (target - today).days
        options = ["md", "md", "iso"]
        if delta == 1:
            options += ["tomorrow"] * 3
        if 1 <= delta <= 7:
            options += ["next_wd"] * 4
        if delta <= 30:
            options += ["in_days"]
        if delta in (7, 14) and lang == "en":
            options += ["in_weeks"] * 2
        if delta <= 27 and lang == "en":
            options += ["dom"] * 2
        kind = rng.choice(options)
        iso = target.isoformat()
        wd = WEEKDAYS[lang][target.weekday()]
        if kind == "md":
            md = cls.month_day(lang, target, rng)
            prep = {"en": "on ", "es": "el ", "fr": "le ", "de": "am "}[lang]
            return md, prep + md
        if kind == "iso":
            prep = {"en": "on ", "es": "el ", "fr": "le ", "de": "am "}[lang]
            return iso, prep + iso
        if kind == "tomorrow":
            w = {"en": "tomorrow", "es": "mañana", "fr": "demain", "de": "morgen"}[lang]
            return w, w
        if kind == "next_wd":
            w = {"en": rng.choice((f"next {wd}", f"next {wd.capitalize()}", f"this coming {wd}")),
                 "es": f"el próximo {wd}", "fr": f"{wd} prochain", "de": f"nächsten {wd}"}[lang]
            return w, w
        if kind == "in_days":
            w = {"en": f"in {delta} days", "es": f"dentro de {delta} días", "fr": f"dans {delta} jours",
                 "de": f"in {delta} Tagen"}[lang]
            return w, w
        if kind == "in_weeks":
            w = "in a week" if delta == 7 else "in two weeks"
            return w, w
        o = _ordinal_en(target.day)  # dom: the first date after today with that day of month
        return f"the {o}", f"on the {o}"


# --- the Turn factory ---------------------------------------------------------------------------
def _with_date(rng: random.Random, templates: list[str], bare: str, prep: str) -> str:
    """Fill a template with a date; "in 5 days" only reads well where the template takes {p}."""
    if bare == prep:
        with_p = [t for t in templates if "{p}" in t]
        templates = with_p or templates
    return rng.choice(templates).format(d=bare, p=prep)


def _bucket(i: int) -> str:
    return "1" if i == 1 else ("2-3" if i <= 3 else "4+")


class _Sim:
    def __init__(self, seed: int, day: dt.date, drift: float) -> None:
        self.rng = random.Random(f"travel|{seed}|{day.isoformat()}|{drift:.4f}")
        self.day = day
        self.drift = drift
        tag = f"{seed}" + (f"d{round(drift * 1000)}" if drift else "")
        self.id_prefix = f"travel-{day.strftime('%Y%m%d')}-{tag}-"
        self.conv_prefix = f"conv-{day.strftime('%Y%m%d')}-{tag}-"
        self.day_iso = day.isoformat()
        self.p_non_en = 0.12 + 0.45 * drift
        self.p_new_city = 0.6 * drift
        self.p_oos = 0.03 + 0.3 * drift
        self.p_typo = 0.08 + 0.12 * drift
        self.scenarios = ("flights", "hotels", "both", "places", "chat")
        self.scenario_w = (0.42 - 0.17 * drift, 0.24, 0.12 + 0.05 * drift, 0.14 + 0.12 * drift, 0.08)

    # -- values -------------------------------------------------------------------------------
    def city_text(self, canonical: str, lang: str) -> str:
        r = self.rng.random()
        code = BASE_CITIES.get(canonical) or DRIFT_CITIES.get(canonical)
        alias = ALIASES[lang].get(canonical)
        if alias and r < (0.2 if lang == "en" else 0.7):
            return alias
        if r < self.p_typo and len(canonical) >= 5 and " " not in canonical:
            i = self.rng.randrange(1, len(canonical) - 2)
            if self.rng.random() < 0.5:  # drop a letter
                return canonical[:i] + canonical[i + 1:]
            return canonical[:i] + canonical[i + 1] + canonical[i] + canonical[i + 2:]  # swap two
        if r < self.p_typo + 0.05 and code:
            return code
        if r < self.p_typo + 0.15:
            return canonical.lower()
        return canonical

    def pick_city(self, exclude: str | None = None, new_ok: bool = True) -> str:
        pool = DRIFT_CITIES if new_ok and self.rng.random() < self.p_new_city else BASE_CITIES
        while True:
            c = self.rng.choice(tuple(pool))
            if c != exclude:
                return c

    def person(self) -> dict[str, str]:
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        user = rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}", f"{first}_{last}"))
        user = user.lower().replace("ü", "ue")
        phone = rng.choice((
            f"+1 {rng.randint(201, 989)} 555 {rng.randint(1000, 9999)}",
            f"({rng.randint(201, 989)}) 555-{rng.randint(1000, 9999)}",
            f"+44 7700 {rng.randint(900000, 900999)}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
            f"+34 6{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        ))
        return {"name": f"{first} {last}", "email": f"{user}@{rng.choice(MAIL_HOSTS)}", "phone": phone}

    def options(self, kind: str, k: int) -> list[tuple[str, int]]:
        prefix = "FL" if kind == "flights" else "HT"
        lo, hi = (90, 900) if kind == "flights" else (60, 320)
        rnd = self.rng.random
        out: list[tuple[str, int]] = []
        while len(out) < k:
            price = lo + int(rnd() * (hi - lo))
            if all(price != p for _, p in out):  # distinct prices: "the cheapest" is unambiguous
                out.append((f"{prefix}-{1000 + int(rnd() * 9000)}", price))
        return out

    # -- the stream ---------------------------------------------------------------------------
    def run(self, n: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        emitted = 0
        later: list[tuple[int, dict[str, Any]]] = []  # (emit at, duplicate) -- copied when made
        conv_no = 0
        while emitted < n:
            conv_no += 1
            for turn in self.conversation(f"{self.conv_prefix}{conv_no:06d}"):
                r = rng.random()
                if r < EXACT_DUP_RATE + NEAR_DUP_RATE:  # a retried / re-sent request, seen again later
                    dup = _copy_turn(turn)
                    dup["meta"]["captured_at"] = _later(turn["meta"]["captured_at"], rng.randint(1, 900), self.day)
                    if r >= EXACT_DUP_RATE:  # near duplicate: same meaning, slightly different text
                        last = dup["input"]["messages"][-1]
                        last["content"] = rng.choice(NEAR_DUP_EDITS).format(last["content"])
                    later.append((emitted + rng.randint(1, 60), dup))
                batch = [turn]
                if later and later[0][0] <= emitted:
                    batch += [t for at, t in later if at <= emitted]
                    later = [(at, t) for at, t in later if at > emitted]
                for t in batch:
                    t["id"] = f"{self.id_prefix}{emitted:07d}"
                    yield t
                    emitted += 1
                    if emitted >= n:
                        return

    def conversation(self, conv_id: str) -> Iterator[dict[str, Any]]:
        rng = self.rng
        lang = "en"
        if rng.random() < self.p_non_en:
            lang = rng.choice(("es", "fr", "de", "es", "fr", "de", "es"))
        P = PHRASES[lang]
        today = self.day
        goal: dict[str, Any] = {}
        goal["destination"] = self.pick_city()
        goal["origin"] = self.pick_city(exclude=goal["destination"], new_ok=rng.random() < 0.3)
        depart = today + dt.timedelta(days=rng.choice((rng.randint(1, 8), rng.randint(1, 30), rng.randint(5, 120))))
        goal["depart_date"] = depart
        goal["nights"] = rng.choice((2, 3, 3, 4, 5, 5, 7, 7, 10, 14))
        goal["travelers"] = rng.choices((1, 2, 3, 4, 5, 6), (30, 40, 10, 14, 4, 2))[0]
        goal["currency"] = rng.choices(CURRENCIES, (5, 4, 1))[0]
        goal["budget"] = rng.randrange(300, 2500, 50)
        goal["cabin"] = rng.choices(CABINS, (6, 1, 3, 1))[0]
        goal["hotel_area"] = rng.choice(AREAS)
        st = _ConvState(self, conv_id, lang, P, goal)
        t0 = rng.randint(0, 86400 - 1200)
        st.clock = t0

        scenario = rng.choices(self.scenarios, self.scenario_w)[0]
        acts: list = []
        if rng.random() < 0.2:
            acts.append(("greet",))
        if scenario == "chat":
            acts += [("summarize",) if rng.random() < 0.3 else ("greet",), ("thanks",)]
            yield from st.play(acts)
            return
        if rng.random() < self.p_oos:
            acts.append(("oos",))
        if scenario == "places":
            acts.append(("places", "city" if rng.random() < 0.85 else "nocity"))
            yield from st.play(acts)
            if rng.random() < 0.4:
                yield from st.play([("places", "city")])
            if rng.random() < 0.3:
                yield from st.play([("thanks",)])
            return
        acts.append(("search", scenario))
        yield from st.play(acts)
        # answer clarifications (at most two rounds, then the user gives up)
        for _ in range(2):
            if st.pending and st.pending[0] == "search":
                yield from st.play([("inform", st.pending[1])])
        if not st.shown:
            return
        r = rng.random()
        if r < 0.25:
            yield from st.play([("correction", st.shown[0])])
            r = rng.random() * 0.8 + 0.2
        if r < 0.6:
            yield from st.play([("book",)])
            for _ in range(2):
                if st.pending and st.pending[0] == "book":
                    yield from st.play([("contact",)])
        elif r < 0.72:
            yield from st.play([("places", "there" if rng.random() < 0.5 else "city")])
        elif r < 0.8:
            yield from st.play([("summarize",)])
        elif r < 0.85 and rng.random() < self.p_oos * 3:
            yield from st.play([("oos",)])
        if rng.random() < 0.3:
            yield from st.play([("thanks",)])


class _ConvState:
    """One conversation: visible slots and history, hidden goal, what the assistant last showed."""

    def __init__(self, sim: _Sim, conv_id: str, lang: str, P: dict, goal: dict) -> None:
        self.sim, self.rng, self.conv_id, self.lang, self.P = sim, sim.rng, conv_id, lang, P
        self.goal = goal
        self._who: dict[str, str] | None = None
        self.today = sim.day
        self.slots: dict[str, Any] = {"today": sim.day.isoformat()}
        self.history: list[dict[str, str]] = []
        self.pending: tuple | None = None  # ("search", kind) | ("book", option_id) | ("places", category)
        self.shown: tuple | None = None  # (kind, [(id, price), ...]) after options were shown
        self.user_turns = 0
        self.clock = 0

    # -- helpers ------------------------------------------------------------------------------
    @property
    def who(self) -> dict[str, str]:
        """The traveler's name, email and phone (drawn when first needed)."""
        if self._who is None:
            self._who = self.sim.person()
        return self._who

    def c(self, canonical: str) -> str:
        return self.sim.city_text(canonical, self.lang)

    def date_phrase(self, target: dt.date) -> tuple[str, str]:
        return _Dates.depart(self.lang, self.today, target, self.rng)

    def return_phrase(self, kind: str, depart_known: bool) -> str:
        """A phrase for the return / check-out date (relative forms only when the departure is known)."""
        rng, P, g = self.rng, self.P, self.goal
        ret = g["depart_date"] + dt.timedelta(days=g["nights"])
        options = ["abs", "abs"]
        if depart_known:
            options += ["nights", "nights"]
            if g["nights"] == 7:
                options.append("week")
            if g["nights"] <= 27 and self.lang == "en":
                options.append("rel")
        k = rng.choice(options)
        if k == "nights":
            return rng.choice(P["nights"]).format(n=g["nights"])
        if k == "week":
            return rng.choice(P["week"])
        if k == "rel":
            o = _ordinal_en(ret.day)
            return rng.choice(P["ret_rel"] if kind == "flights" else P["ht_rel"]).format(o=o)
        bare, prep = self.date_phrase_abs(ret)
        return rng.choice(P["ret_date"] if kind == "flights" else P["ht_until"]).format(d=bare, p=prep)

    def date_phrase_abs(self, target: dt.date) -> tuple[str, str]:
        if self.rng.random() < 0.3:
            iso = target.isoformat()
            prep = {"en": "on ", "es": "el ", "fr": "le ", "de": "am "}[self.lang]
            return iso, prep + iso
        md = _Dates.month_day(self.lang, target, self.rng)
        prep = {"en": "on ", "es": "el ", "fr": "le ", "de": "am "}[self.lang]
        return md, prep + md

    def fragments(self, kind: str, fields: list[str], updates: dict, bare_city: bool = False) -> list[str]:
        """Phrases mentioning `fields` of the goal; records what they mean in `updates`."""
        rng, P, g = self.rng, self.P, self.goal
        out = []
        for f in fields:
            if f == "origin":
                out.append(rng.choice(P["origin"]).format(c=self.c(g["origin"])))
                updates["origin"] = g["origin"]
            elif f == "destination":
                text = self.c(g["destination"])
                if bare_city:
                    out.append(rng.choice(P["inform_city_bare"]).format(c=text) if kind != "flights" else text)
                else:
                    out.append(rng.choice(P["dest"] if kind != "hotels" else P["ht_city"]).format(c=text))
                updates["destination"] = g["destination"]
            elif f == "depart_date":
                bare, prep = self.date_phrase(g["depart_date"])
                if kind == "hotels":
                    out.append(_with_date(rng, P["ht_from"], bare, prep))
                else:
                    out.append(prep)
                updates["depart_date"] = g["depart_date"].isoformat()
            elif f == "return_date":
                depart_known = "depart_date" in updates or "depart_date" in self.slots
                out.append(self.return_phrase(kind, depart_known))
                updates["return_date"] = (g["depart_date"] + dt.timedelta(days=g["nights"])).isoformat()
            elif f == "travelers":
                out.append(rng.choice(P["travelers"][g["travelers"]]))
                updates["travelers"] = g["travelers"]
            elif f == "budget":
                out.append(rng.choice(P["budget"][g["currency"]]).format(a=g["budget"]))
                updates["budget"] = g["budget"]
                updates["currency"] = g["currency"]
            elif f == "cabin":
                out.append(rng.choice(P["cabin"][g["cabin"]]))
                updates["cabin"] = g["cabin"]
            elif f == "hotel_area":
                out.append(rng.choice(P["area"][g["hotel_area"]]))
                updates["hotel_area"] = g["hotel_area"]
        return out

    # -- user acts: each returns (intent, text, slot_updates, extra) ---------------------------
    def act_search(self, kind: str):
        rng, P = self.rng, self.P
        updates: dict = {}
        fields: list[str] = []
        if kind in ("flights", "both"):
            if rng.random() < 0.75:
                fields.append("origin")
            if rng.random() < 0.92:
                fields.append("destination")
            if rng.random() < 0.75:
                fields.append("depart_date")
            if rng.random() < (0.4 if kind == "flights" else 0.75):
                fields.append("return_date")
            for f, p in (("travelers", 0.45), ("budget", 0.2), ("cabin", 0.2)):
                if rng.random() < p:
                    fields.append(f)
        else:
            if rng.random() < 0.93:
                fields.append("destination")
            if rng.random() < 0.8:
                fields.append("depart_date")
            if rng.random() < 0.75:
                fields.append("return_date")
            for f, p in (("travelers", 0.45), ("hotel_area", 0.4)):
                if rng.random() < p:
                    fields.append(f)
        frags = self.fragments("hotels" if kind == "hotels" else "flights", fields, updates)
        head = frags[:2] if kind != "hotels" else frags[:1]
        tail = frags[len(head):]
        rng.shuffle(tail)
        opener = rng.choice(P[{"flights": "fl_open", "hotels": "ht_open", "both": "both_open"}[kind]])
        sep = ", " if rng.random() < 0.3 else " "
        text = opener + (" " + " ".join(head) if head else "") + (sep + sep.join(tail) if tail else "")
        text += rng.choice(P["closers"])
        return ("search_" + kind if kind != "both" else "search_both"), text, updates, {"search": kind}

    def act_inform(self, kind: str):
        rng, P = self.rng, self.P
        updates: dict = {}
        kinds = ("flights", "hotels") if kind == "both" else (kind,)
        missing = [f for k in kinds for f in REQUIRED[k] if f not in self.slots]
        missing = list(dict.fromkeys(missing))
        give = [f for f in missing if rng.random() < 0.8] or [rng.choice(missing)]
        if rng.random() < 0.15:
            extra = rng.choice(("travelers", "budget" if kind != "hotels" else "hotel_area"))
            if extra not in give and extra not in self.slots:
                give.append(extra)
        # a bare city is unambiguous only when the assistant asked for a single city
        city_fields = [f for f in missing if f in ("origin", "destination")]
        bare = len(city_fields) == 1 and city_fields[0] == "destination" and rng.random() < 0.6
        frags = self.fragments("hotels" if kind == "hotels" else "flights", give, updates, bare_city=bare)
        text = rng.choice(P["inform_join"]).join(frags)
        if rng.random() < 0.3:
            text = text[:1].upper() + text[1:]
        return "inform", text, updates, {"search": kind}

    def act_correction(self, kind: str):
        """Change one thing about the search just shown (the truth re-runs that search)."""
        rng, P, g, slots = self.rng, self.P, self.goal, self.slots
        updates: dict = {}
        choices = ["destination", "destination", "depart_date", "travelers"]
        if kind in ("flights", "both"):
            choices.append("cabin")
        if kind in ("hotels", "both"):
            choices += ["nights", "hotel_area"]
        what = rng.choice(choices)
        text = ""
        if what == "destination":
            new_city = self.sim.pick_city(exclude=slots.get("destination"))
            if new_city != slots.get("origin"):
                g["destination"] = new_city
                text = rng.choice(P["corr_dest"]).format(c=self.c(new_city))
                updates["destination"] = new_city
        elif what == "depart_date":
            old = dt.date.fromisoformat(slots["depart_date"])
            ret = dt.date.fromisoformat(slots["return_date"]) if "return_date" in slots else None
            for shift in rng.sample((-3, -2, -1, 1, 2, 3), 6):
                new = old + dt.timedelta(days=shift)
                if new > self.today and (ret is None or new < ret):
                    g["depart_date"] = new
                    if ret is not None:  # the return date stays, so the stay changes length
                        g["nights"] = (ret - new).days
                    bare, prep = self.date_phrase(new)
                    text = _with_date(rng, P["corr_depart"], bare, prep)
                    updates["depart_date"] = new.isoformat()
                    break
        elif what == "nights":
            g["nights"] = rng.choice([x for x in (2, 3, 4, 5, 6, 7, 10) if x != g["nights"]])
            text = rng.choice(P["corr_nights"]).format(n=g["nights"])
            ret = dt.date.fromisoformat(slots["depart_date"]) + dt.timedelta(days=g["nights"])
            updates["return_date"] = ret.isoformat()
        elif what == "cabin":
            g["cabin"] = rng.choice([x for x in CABINS if x != slots.get("cabin")])
            text = rng.choice(P["corr_cabin"]).format(cab=rng.choice(P["cabin"][g["cabin"]]))
            updates["cabin"] = g["cabin"]
        elif what == "hotel_area":
            g["hotel_area"] = rng.choice([x for x in AREAS if x != slots.get("hotel_area")])
            text = rng.choice(P["corr_area"]).format(area=rng.choice(P["area"][g["hotel_area"]]))
            updates["hotel_area"] = g["hotel_area"]
        if not text:  # "travelers", or a change above that was not possible
            g["travelers"] = rng.choice([x for x in (1, 2, 3, 4, 5) if x != slots.get("travelers")])
            text = rng.choice(P["corr_travelers"]).format(n=g["travelers"])
            updates["travelers"] = g["travelers"]
        return "correction", text, updates, {"search": kind}

    def contact_text(self, updates: dict, with_phone: bool) -> str:
        rng, P, who = self.rng, self.P, self.who
        text = rng.choice(P["contact_full"]).format(name=who["name"], email=who["email"])
        updates["traveler_name"], updates["email"] = who["name"], who["email"]
        if with_phone:
            text += rng.choice(P["phone_add"]).format(phone=who["phone"])
            updates["phone"] = who["phone"]
        return text

    def act_book(self):
        rng, P = self.rng, self.P
        kind, opts = self.shown
        updates: dict = {}
        r = rng.random()
        if kind == "both" or r < 0.4:
            oid = rng.choice(opts)[0]
            text = rng.choice(P["book_id"]).format(id=oid)
        elif r < 0.8:
            k = rng.randrange(len(opts))
            oid = opts[k][0]
            text = rng.choice(P["book_ord"]).format(k=k + 1, ord=P["ord"][k])
        elif r < 0.92:
            oid = min(opts, key=lambda o: o[1])[0]
            text = rng.choice(P["book_cheap"])
        else:
            oid = opts[-1][0]
            text = rng.choice(P["book_last"])
        if "email" not in self.slots and rng.random() < 0.35:
            who = self.who
            text += rng.choice(P["with_contact"]).format(name=who["name"], email=who["email"])
            updates["traveler_name"], updates["email"] = who["name"], who["email"]
        return "book", text, updates, {"option": oid}

    def act_contact(self):
        rng, P, who = self.rng, self.P, self.who
        updates: dict = {}
        have_name, have_email = "traveler_name" in self.slots, "email" in self.slots
        if not have_name and not have_email and rng.random() < 0.2:
            text = rng.choice(P["contact_name"]).format(name=who["name"])
            updates["traveler_name"] = who["name"]
        elif have_name and not have_email:
            text = rng.choice(P["contact_email"]).format(email=who["email"])
            updates["email"] = who["email"]
        elif have_email and not have_name:
            text = rng.choice(P["contact_name"]).format(name=who["name"])
            updates["traveler_name"] = who["name"]
        else:
            text = self.contact_text(updates, with_phone=rng.random() < 0.3)
        return "contact", text, updates, {"option": self.pending[1]}

    def act_places(self, mode: str):
        rng, P = self.rng, self.P
        cat = rng.choice(CATEGORIES)
        cat_text = rng.choice(P["cat"][cat])
        city = None
        if mode == "there" and "destination" in self.slots:
            text = rng.choice(P["pl_there"]).format(cat=cat_text)
            city = self.slots["destination"]
        elif mode == "nocity" and "destination" not in self.slots:
            text = rng.choice(P["pl_nocity"]).format(cat=cat_text)
        else:
            city = self.sim.pick_city()
            text = rng.choice(P["pl_q"]).format(cat=cat_text, c=self.c(city))
        return "find_places", text, {}, {"category": cat, "city": city}

    def act_places_city(self):
        city = self.sim.pick_city()
        text = self.rng.choice(("{c}", "in {c}", "{c} please")).format(c=self.c(city)) if self.lang == "en" else self.c(city)
        return "find_places", text, {}, {"category": self.pending[1], "city": city}

    def act_simple(self, what: str):
        rng, P = self.rng, self.P
        if what == "oos":
            text = rng.choice(P["oos"]).format(country=rng.choice(COUNTRIES), c=self.c(self.sim.pick_city()),
                                               month=rng.choice(MONTHS[self.lang]))
            return "out_of_scope", text, {}, {}
        intent = {"greet": "smalltalk", "thanks": "smalltalk", "summarize": "summarize"}[what]
        return intent, rng.choice(P[what]), {}, {"what": what}

    # -- truth --------------------------------------------------------------------------------
    def play(self, acts: list) -> Iterator[dict[str, Any]]:
        for act in acts:
            name = act[0]
            if name == "search":
                res = self.act_search(act[1])
            elif name == "inform":
                res = self.act_inform(act[1])
            elif name == "correction":
                res = self.act_correction(act[1])
            elif name == "book":
                res = self.act_book()
            elif name == "contact":
                res = self.act_contact()
            elif name == "places":
                if self.pending and self.pending[0] == "places":
                    res = self.act_places_city()
                else:
                    res = self.act_places(act[1])
            else:
                res = self.act_simple(name)
            yield from self.resolve(*res)

    def resolve(self, intent: str, text: str, updates: dict, extra: dict) -> Iterator[dict[str, Any]]:
        rng = self.rng
        self.user_turns += 1
        slots = self.slots
        new = dict(slots)
        new.update(updates)
        tools: list[dict] = []
        reply: str
        render: str
        pending = None
        shown = None
        if "search" in extra:
            kind = extra["search"]
            kinds = ("flights", "hotels") if kind == "both" else (kind,)
            missing = [f for k in kinds for f in REQUIRED[k] if f not in new]
            if missing:
                render = "ask_clarification"
                labels = {**FIELD_LABEL["flights"], **FIELD_LABEL["hotels"]} if kind == "both" else FIELD_LABEL[kind]
                need = list(dict.fromkeys(labels[f] for f in missing))
                what = "flights and a hotel" if kind == "both" else kind
                reply = f"To search {what} I still need: {', '.join(need)}."
                pending = ("search", kind)
            else:
                render = "show_options"
                tools = [_request(k, new) for k in kinds]
                if kind == "both":
                    fo, ho = self.sim.options("flights", 2), self.sim.options("hotels", 2)
                    reply = ("Flights: " + "; ".join(f"{i} {p}" for i, p in fo) + ". Hotels: "
                             + "; ".join(f"{i} {p}/night" for i, p in ho) + ". Want to book one?")
                    shown = ("both", fo + ho)
                elif kind == "flights":
                    opts = self.sim.options("flights", 3)
                    cur = new.get("currency", "USD")
                    reply = (f"Flights {new['origin']}-{new['destination']} {new['depart_date']} ({cur}): "
                             + "; ".join(f"{i} {rng.choice(AIRLINES)} {p}" for i, p in opts) + ".")
                    shown = ("flights", opts)
                else:
                    opts = self.sim.options("hotels", 3)
                    reply = (f"Hotels in {new['destination']}, {new['depart_date'][5:]} to {new['return_date'][5:]}: "
                             + "; ".join(f"{i} {p}/night" for i, p in opts) + ".")
                    shown = ("hotels", opts)
        elif "option" in extra:
            oid = extra["option"]
            if "traveler_name" in new and "email" in new:
                render = "confirm_booking"
                tools = [{"tool": "book", "arguments": {"option_id": oid, "traveler_name": new["traveler_name"],
                                                          "email": new["email"]}}]
                reply = f"Booked {oid} for {new['traveler_name']}. Confirmation sent to {new['email']}."
            else:
                render = "ask_clarification"
                need = [lbl for f, lbl in (("traveler_name", "the traveler's full name"), ("email", "an email"))
                        if f not in new]
                reply = f"To book {oid} I still need {' and '.join(need)}."
                pending = ("book", oid)
        elif "category" in extra:
            cat, city = extra["category"], extra["city"]
            if city is None:
                render = "ask_clarification"
                reply = f"Which city should I look for {EN['cat'][cat][0]} in?"
                pending = ("places", cat)
            else:
                render = "show_options"
                tools = [{"tool": "search_places", "arguments": {"city": city, "category": cat}}]
                reply = f"Here are some {EN['cat'][cat][0]} in {city} you might like."
                shown = self.shown  # places do not replace the bookable options on screen
        elif intent == "summarize":
            render = "summarize_trip"
            reply = _summary(slots)
        elif intent == "out_of_scope":
            render = "out_of_scope"
            reply = "Sorry, I can only help with flights, hotels, places to visit and bookings."
        else:
            render = "smalltalk"
            if extra.get("what") == "greet":
                reply = rng.choice(("Hi! Where would you like to go?", "Hello! How can I help with your trip?"))
            else:
                reply = rng.choice(("You're welcome! Anything else?", "Happy to help. What's next?"))

        truth = {"slot_updates": {k: updates[k] for k in SLOT_ORDER if k in updates},
                 "tool_requests": tools, "render_intent": render}
        user_msg = {"role": "user", "content": text}
        self.clock += rng.randint(15, 150)
        sec = min(self.clock, 86399)
        ts = f"{self.sim.day_iso}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z"
        sl = {"intent": intent, "language": self.lang, "turn_index": _bucket(self.user_turns)}
        hist = self.history[-MAX_HISTORY:]
        while len(hist) > 1 and sum(len(m["content"]) for m in hist) > MAX_HISTORY_CHARS:
            hist = hist[1:]  # an application trims old turns to fit its context budget
        yield _turn("plan_turn", hist, user_msg, slots, truth, sl, self.conv_id, ts)
        if tools:
            call = {"name": tools[0]["tool"], "arguments": dict(tools[0]["arguments"])}
            yield _turn("call_tool", hist, user_msg, slots, call, dict(sl), self.conv_id, ts)
        self.history = hist + [user_msg, {"role": "assistant", "content": reply}]
        self.slots = new
        self.pending = pending
        self.shown = shown


SLOT_ORDER = ("origin", "destination", "depart_date", "return_date", "travelers", "budget", "currency", "cabin",
              "hotel_area", "traveler_name", "email", "phone")


def _request(kind: str, s: dict) -> dict:
    if kind == "flights":
        args = {"origin": s["origin"], "destination": s["destination"], "depart_date": s["depart_date"]}
        for src, dst in (("return_date", "return_date"), ("travelers", "travelers"), ("cabin", "cabin"),
                         ("budget", "max_price")):
            if src in s:
                args[dst] = s[src]
        return {"tool": "search_flights", "arguments": args}
    args = {"city": s["destination"], "check_in": s["depart_date"], "check_out": s["return_date"]}
    if "travelers" in s:
        args["guests"] = s["travelers"]
    if "hotel_area" in s:
        args["area"] = s["hotel_area"]
    return {"tool": "search_hotels", "arguments": args}


def _summary(s: dict) -> str:
    parts = []
    if "origin" in s or "destination" in s:
        parts.append(f"{s.get('origin', '?')} -> {s.get('destination', '?')}")
    if "depart_date" in s:
        parts.append(s["depart_date"] + (f" to {s['return_date']}" if "return_date" in s else ""))
    if "travelers" in s:
        parts.append(f"{s['travelers']} traveler(s)")
    return ("So far: " + ", ".join(parts) + ".") if parts else "Nothing planned yet. Where would you like to go?"


def _turn(role: str, hist: list, user_msg: dict, slots: dict, output: dict, sl: dict, conv: str, ts: str) -> dict:
    messages = [{"role": m["role"], "content": m["content"]} for m in hist]
    messages.append({"role": "user", "content": user_msg["content"]})
    return {
        "id": "",
        "domain": DOMAIN,
        "role": role,
        "input": {"messages": messages, "slots": dict(slots)},
        "output": output,
        "labels": {"capture": output},
        "meta": {"captured_at": ts, "source": "simulated", "slice": sl, "conversation": conv},
    }


def _copy_turn(t: dict) -> dict:
    return json.loads(json.dumps(t))


def _later(ts: str, seconds: int, day: dt.date) -> str:
    t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ") + dt.timedelta(seconds=seconds)
    end = dt.datetime(day.year, day.month, day.day, 23, 59, 59)
    return min(t, end).strftime("%Y-%m-%dT%H:%M:%SZ")


def simulate(n: int, seed: int = 0, day: str | None = None, drift: float = 0.0) -> Iterator[dict]:
    """Yield `n` simulated Turns (plan_turn and call_tool mixed) captured on `day` (default today, UTC)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= drift <= 1.0:
        raise ValueError("drift must be in [0, 1]")
    if isinstance(day, dt.date):
        d = day
    else:
        d = dt.date.fromisoformat(day) if day else dt.datetime.now(dt.timezone.utc).date()
    if n == 0:
        return iter(())
    return _Sim(seed, d, float(drift)).run(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulate travel-planner turns (JSONL).")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--day", default=None, help="capture day YYYY-MM-DD (default: today, UTC)")
    ap.add_argument("--drift", type=float, default=0.0)
    ap.add_argument("--out", default=None, help="output file (default: stdout)")
    ap.add_argument("--gold", action="store_true", help="put the truth in labels.gold instead of labels.capture")
    args = ap.parse_args(argv)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for turn in simulate(args.n, seed=args.seed, day=args.day, drift=args.drift):
            if args.gold:
                turn["labels"] = {"gold": turn["labels"]["capture"]}
            out.write(json.dumps(turn, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
