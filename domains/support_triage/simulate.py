"""Seeded simulator of support tickets for the `support_triage` domain.

Every ticket is written from hidden true labels: a category, a product, a base priority carried
by the template, and modifiers (business impact, repeated contact, a request for a human) that
the text shows and the truth rules read. The texts vary the way real tickets do: many templates
per category with inline paraphrases, synonym swaps, sentence reordering, greetings and
signatures, typos, four languages plus mixed-language tickets, multi-issue tickets, PII that a
redactor must catch (emails, phone numbers, names after "my name is" or a sign-off, card numbers
that pass Luhn) next to order numbers (`#48213`) that are not PII, and duplicates (exact
re-sends, near-duplicate follow-ups). `drift` moves the traffic towards a newly launched product
(Lumio Assist), more non-English tickets and more chat.

Truth rules (what the labels mean):
  priority      template base (low 0 .. urgent 3), +1 for business impact, +1 for a repeated
                contact, capped at urgent; a customer shouting "URGENT" changes nothing.
  needs_human   security and cancellation tickets, anything urgent, a repeated contact, an
                explicit request for a person, and templates that need a decision (refunds,
                GDPR deletion, churn threats).
  product       the product the (primary) issue is about; `general` when none is named.
  multi-issue   category and product come from the issue with the higher priority (ties: the
                category earlier in PRECEDENCE); priority is the max, needs_human the OR.
  language      the language of the ticket body (greetings and sign-offs may be in another).

API (called by the platform): simulate(n, seed=0, day=None, drift=0.0) -> Iterator[dict] of Turn
dicts in the capture format. CLI:
  python domains/support_triage/simulate.py --n 1000 --seed 1 [--day 2026-11-21] [--drift 0.3]
                                            [--typo-rate 0.02] [--gold] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from calendar import timegm
from datetime import datetime, timezone
from typing import Iterator

DOMAIN = "support_triage"
ROLE = "triage"

CATEGORIES = ("billing", "bug", "account", "security", "how_to", "feature_request", "cancellation")
PRIORITIES = ("low", "medium", "high", "urgent")
PRODUCTS = ("drive", "mail", "calendar", "pay", "assist", "general")
LANGUAGES = ("en", "fr", "es", "de")
CHANNELS = ("email", "web_form", "chat", "mobile_app")
# multi-issue tie break: the category listed first wins
PRECEDENCE = ("security", "bug", "billing", "account", "cancellation", "feature_request", "how_to")

TYPO_RATE = 0.02  # per-character typo probability inside a typo-prone ticket's issue text
EXACT_DUP_RATE = 0.03  # share of turns that re-send an earlier ticket verbatim
NEAR_DUP_RATE = 0.05  # share of turns that re-send an earlier ticket with a small change
MULTI_ISSUE_RATE = 0.12
DUP_WINDOW = 300  # duplicates re-send one of the last DUP_WINDOW original tickets

# --- sampling weights (drift is applied on top) ---------------------------------------------------
_CATEGORY_W = {"billing": 0.20, "bug": 0.22, "account": 0.15, "security": 0.05, "how_to": 0.17,
               "feature_request": 0.10, "cancellation": 0.11}
_PRODUCT_W = {"drive": 0.27, "mail": 0.22, "calendar": 0.15, "pay": 0.16, "assist": 0.04, "general": 0.16}
_CHANNEL_W = {"email": 0.45, "web_form": 0.25, "chat": 0.22, "mobile_app": 0.08}
# categories of the "new product launch" traffic that drift injects
_LAUNCH_CATEGORY_W = {"bug": 0.45, "how_to": 0.25, "feature_request": 0.15, "billing": 0.15}
_NON_EN_BASE, _NON_EN_DRIFT = 0.15, 0.25  # non-English share = base + drift * _NON_EN_DRIFT
_LAUNCH_DRIFT = 0.55  # share of tickets forced onto the new product at drift=1

# --- template mini-language ---------------------------------------------------------------------
# "[a|b|]" picks one alternative (an empty one makes the part optional); "{SLOT}" is filled per
# ticket. Product slots (PN, PA, PAC, PAL, F, HOWTO, FEAT) tie a template to a product; a
# template without one is about the account as a whole (product "general").
_PRODUCT_SLOTS = ("{PN}", "{PA}", "{PAC}", "{PAL}", "{F}", "{HOWTO}", "{FEAT}")


def _compile(text: str) -> tuple:
    parts: list = []
    i = 0
    while i < len(text):
        j = text.find("[", i)
        if j < 0:
            parts.append(text[i:])
            break
        if j > i:
            parts.append(text[i:j])
        k = text.index("]", j)
        parts.append(tuple(text[j + 1:k].split("|")))
        i = k + 1
    literal = "".join(p for p in parts if isinstance(p, str))
    in_alts = any(s in alt for p in parts if isinstance(p, tuple) for alt in p for s in _PRODUCT_SLOTS)
    has_product = any(s in literal for s in _PRODUCT_SLOTS)
    if in_alts and not has_product:
        raise ValueError(f"template names a product only inside alternatives: {text!r}")
    return tuple(parts), has_product, "{" in text


def _render(compiled: tuple, rnd, slots: dict) -> str:
    parts, _, has_slots = compiled
    out = []
    for p in parts:
        if p.__class__ is str:
            out.append(p)
        else:
            out.append(p[int(rnd() * len(p))])
    s = "".join(out)
    if has_slots:
        s = s.format_map(slots)
    if "  " in s:
        s = s.replace("  ", " ")
    return s


def _bank(items) -> tuple:
    return tuple(_compile(t) for t in items)


# --- issue templates: (base priority 0..3, needs_human, text, forced product or None) -------------
_T = {
    "en": {
        "billing": [
            (2, 1, "I was [charged|billed] twice for my {PN} subscription this month[, {AMT} each|]. [Please refund the duplicate charge.|I need the extra charge refunded.|Can you reverse one of them?]", None),
            (1, 0, "Can you [send me|resend] the invoice for order {ORDER}? [Our accounting team needs it|I need it for my expense report][ by {DATE}| this week|].", None),
            (2, 1, "I cancelled {PN} [last month|in {MONTH}] but you still took {AMT} from my card. [I want a refund.|Please give me my money back.|Refund it please.]", None),
            (1, 0, "Why did my {PN} bill go up to {AMT}? [Nobody told me about a price change.|I didn't change my plan.|I was paying less before.]", None),
            (1, 0, "[How do I|Where can I] update the [credit card|payment method|billing address] on my {PN} [plan|account]?[ The old card expired.| We changed banks.|]", None),
            (0, 0, "Do you have a [discount|special price] for [nonprofits|students|schools|annual billing] on {PN}?", None),
            (2, 0, "My payment keeps [failing|getting declined] when I try to renew {PN}, [even though the card works everywhere else|the card is fine|and the plan expires on {DATE}].", None),
            (1, 0, "The [VAT number|company name|address] on invoice {INVOICE} is wrong, [can you reissue it?|please send a corrected copy.]", None),
            (2, 1, "My card got hit two times for the same {PN} renewal ([{AMT} each|{AMT} twice]). [Want the second one reversed.|Need one of those back.]", None),
            (1, 0, "[Quick question about|Question regarding] the {AMT} [line|item|debit] on my statement from {DATE} - what is it for? I think it's {PN}.", None),
            (1, 0, "We were moved to the [Business|Pro|Team] plan of {PN} without anyone asking us. [Please switch us back and fix the amount.|Why?]", None),
        ],
        "bug": [
            (2, 0, "{PN} keeps crashing when I [open|use|click on] {F}. [I've reinstalled twice already.|Restarting doesn't help.|Cleared the cache, same thing.]", None),
            (1, 0, "{F} in {PN} [is really slow|takes forever to load|lags a lot] since the last update.", None),
            (3, 1, "{PN} is completely down for our whole company[, nobody can work.|, we get a 502 on every page.|!]", None),
            (1, 0, "I get [an error|the error] \"{ERR}\" when I try to use {F} in {PN}.", None),
            (2, 0, "Data is missing in {PN}: {F} [shows nothing|is empty|is blank] after the sync [this morning|yesterday|last night].", None),
            (0, 0, "Small thing: [the dark mode colors|a button label|the icons] in {PN} [look off|are cut off|overlap] on {F}.", None),
            (1, 0, "{F} [doesn't work|is broken|stopped working] in {PN} [on Safari|on Android|on Windows 11|on my iPhone|in Firefox].", None),
            (2, 0, "Since yesterday {PAL} just shows a blank white screen [after login|when I open {F}]. Nothing loads.", None),
            (3, 1, "Everything in {F} [vanished|disappeared] from {PN} for our team - [this is production data.|we have a client deadline today.]", None),
            (1, 0, "{PAC} [freezes|hangs] for [a few seconds|10 seconds|ages] every time I [switch tabs|scroll|save].", None),
            (2, 0, "Notifications from {PN} [stopped arriving|are not coming through] so we [missed|almost missed] [a client meeting|several payments|important messages].", None),
            (1, 0, "After the update {PAL} logs me out every [few minutes|hour], [super annoying.|very frustrating.]", None),
            (2, 0, "{PAC} [made up|invented] [facts|numbers|a meeting that never happened] in [my summary|the meeting notes|a reply to a client].", "assist"),
            (1, 0, "The summaries from {PN} [are in the wrong language|cut off halfway|repeat the same sentence] [since Tuesday|today|for some documents].", "assist"),
            (1, 0, "{PN} answers [very slowly|with nonsense] when I ask about [our shared files|last week's emails].", "assist"),
        ],
        "account": [
            (2, 0, "I [can't|cannot|am unable to] log in to my account, [it says my password is wrong|the reset link never arrives][ even after resetting it|].", None),
            (0, 0, "How can I change the email address [on|of] my account?", None),
            (2, 0, "My account got locked after too many attempts and I [need access|have a presentation] [today|in an hour].", None),
            (1, 0, "Please [add|invite] {NAME2} to our team workspace, [they joined last week.|new hire starting Monday.]", None),
            (1, 0, "Please remove {NAME2} from our workspace, [they left the company.|they no longer work here.]", None),
            (1, 0, "I'd like to merge my two accounts, [one is personal and one is for work.|I created a second one by mistake.]", None),
            (1, 0, "The two-factor code [never arrives|doesn't arrive|comes too late] by SMS[ anymore|] and I'm stuck at the login screen.", None),
            (0, 0, "Can I change my username[ without losing my data|]?", None),
            (2, 0, "Your system won't let me in since I got a new phone - the authenticator codes are rejected.", None),
            (1, 1, "Please delete my account and all my data [under GDPR.|as required by privacy law.|within 30 days.]", None),
            (1, 0, "I'm the admin but I [lost|no longer have] admin rights on our workspace after [the plan change.|a colleague edited roles.]", None),
        ],
        "security": [
            (3, 1, "I think my account was [hacked|compromised] - there are [logins|sign-ins] from {COUNTRY} I don't recognise.", None),
            (3, 1, "Someone changed my password and recovery email [last night|without my permission|while I was asleep].", None),
            (2, 1, "I got a [phishing|suspicious|fake] email pretending to be Lumio asking for my password. [Is this real?|Just reporting it.|Please look into it.]", None),
            (3, 1, "There are files in {PN} shared publicly that I never shared[, including client contracts|, including payroll data|].", None),
            (3, 1, "An ex-employee still has access to our workspace and [downloaded files.|logged in yesterday.|changed some settings.]", None),
            (3, 1, "Weird stuff in {PAL}: [mails I never sent in my outbox.|a forwarding rule I didn't set up.|sent mails I never wrote and a new forwarding rule.]", "mail"),
            (3, 1, "We found what looks like a data leak: customer details from {PN} [appeared on a forum.|are visible to other accounts.]", None),
            (2, 1, "Someone [is trying|keeps trying] to reset my password, I get [reset emails|codes] I never asked for.", None),
        ],
        "how_to": [
            (0, 0, "How do I {HOWTO} in {PN}?", None),
            (0, 0, "Is it possible to {HOWTO} [in|with] {PN}?[ Couldn't find it in the docs.| I searched the help center.|]", None),
            (0, 0, "[Could you explain|Can you tell me] how to {HOWTO}? [I'm using {PN}.|This is for {PN}.]", None),
            (0, 0, "Where is the setting to {HOWTO}? [I'm on {PN}.|Using {PN} on the web.]", None),
            (0, 0, "New to {PN}. What's the [right|best] way to {HOWTO}?", None),
            (0, 0, "Is there a [guide|tutorial|video] that shows how to {HOWTO} in {PN}?[ Our team starts onboarding next week.|]", None),
            (0, 0, "What's the difference between the Pro and Business plans of {PN}?", None),
        ],
        "feature_request": [
            (0, 0, "It would be great if {PN} could {FEAT}.", None),
            (0, 0, "Feature request: [the ability to|a way to] {FEAT} in {PN}.[ We'd pay more for it.| Lots of my colleagues want this.|]", None),
            (0, 0, "Any plans to let us {FEAT}? [It's the one thing missing from {PN}.|{PN} would be perfect then.]", None),
            (0, 0, "Please [add|consider adding] a way to {FEAT} [to|in] {PN}.", None),
            (0, 0, "Suggestion from a long-time user: let us {FEAT}. {PN} would be perfect then.", None),
            (1, 1, "We're [considering switching|thinking of moving] to a competitor because {PN} can't {FEAT}.", None),
            (0, 0, "Would love to be able to {FEAT} in {PN}[, like in Google Workspace|, like other tools do|].", None),
        ],
        "cancellation": [
            (1, 1, "Please cancel my {PN} subscription [effective immediately.|at the end of this billing period.|before the next renewal.]", None),
            (1, 1, "I want to [close|cancel] my account. [We're moving to another provider.|It's too expensive for us.|We don't use it anymore.]", None),
            (1, 1, "How do I cancel {PN}?[ I don't want it to renew on {DATE}.|]", None),
            (1, 1, "We won't renew {PN} for next year, [please confirm.|please make sure we're not charged again.]", None),
            (1, 1, "Not going to continue with {PN} after this month.[ Please stop the auto-renew.| Turn off the renewal please.]", None),
            (1, 1, "Downgrade our {PN} plan to free[ please.|, we don't need the Pro features anymore.]", None),
            (1, 1, "End our contract for {PN}[, we are closing the business.| as discussed with your sales rep.]", None),
        ],
    },
    "fr": {
        "billing": [
            (2, 1, "J'ai été débité deux fois pour mon abonnement {PN} ce mois-ci. Merci de me rembourser le doublon de {AMT}.", None),
            (1, 0, "Pouvez-vous m'envoyer la facture de la commande {ORDER} ? [Ma comptabilité en a besoin.|C'est pour ma note de frais.]", None),
            (2, 1, "J'ai résilié {PN} le mois dernier mais vous avez encore prélevé {AMT} sur ma carte.", None),
            (1, 0, "Pourquoi ma facture {PN} est passée à {AMT} ? Je n'ai pas changé d'offre.", None),
        ],
        "bug": [
            (2, 0, "{PN} plante à chaque fois que je l'ouvre depuis la dernière mise à jour.", None),
            (1, 0, "{PN} est très lent depuis hier, les pages mettent une minute à charger.", None),
            (3, 1, "{PN} ne fonctionne plus du tout pour toute l'entreprise, personne ne peut travailler !", None),
            (1, 0, "J'ai un message d'erreur « {ERR} » quand j'utilise {PN}.", None),
        ],
        "account": [
            (2, 0, "Je n'arrive plus à me connecter à mon compte, le lien de réinitialisation n'arrive jamais.", None),
            (2, 0, "Mon compte est bloqué après trop de tentatives et j'en ai besoin aujourd'hui.", None),
            (1, 0, "Le code de double authentification n'arrive plus par SMS.", None),
            (0, 0, "Comment changer l'adresse e-mail de mon compte ?", None),
        ],
        "security": [
            (3, 1, "Je pense que mon compte a été piraté : il y a des connexions depuis {COUNTRY} que je ne reconnais pas.", None),
            (3, 1, "Quelqu'un a changé mon mot de passe cette nuit sans mon autorisation.", None),
            (2, 1, "J'ai reçu un e-mail d'hameçonnage qui se fait passer pour Lumio et demande mon mot de passe.", None),
        ],
        "how_to": [
            (0, 0, "Comment faire pour exporter mes données depuis {PN} ?", None),
            (0, 0, "Est-ce possible de changer la langue de {PN} ?", None),
            (0, 0, "Où se trouve le réglage des notifications dans {PN} ?", None),
        ],
        "feature_request": [
            (0, 0, "Ce serait super si {PN} avait un mode sombre.", None),
            (0, 0, "Suggestion : pouvoir programmer l'envoi dans {PN}.", None),
            (0, 0, "Est-ce que vous prévoyez une intégration Slack pour {PN} ?", None),
        ],
        "cancellation": [
            (1, 1, "Merci de résilier mon abonnement {PN} à la fin de la période en cours.", None),
            (1, 1, "Je veux fermer mon compte, c'est trop cher pour nous.", None),
            (1, 1, "Comment arrêter {PN} ? Je ne veux pas qu'il soit renouvelé.", None),
        ],
    },
    "es": {
        "billing": [
            (2, 1, "Me han cobrado dos veces la suscripción de {PN} este mes. Quiero el reembolso de {AMT}.", None),
            (1, 0, "¿Me pueden enviar la factura del pedido {ORDER}? La necesito para contabilidad.", None),
            (2, 1, "Cancelé {PN} el mes pasado pero me han vuelto a cobrar {AMT}.", None),
            (1, 0, "¿Por qué mi factura de {PN} ha subido a {AMT}? No cambié de plan.", None),
        ],
        "bug": [
            (2, 0, "{PN} se cierra cada vez que lo abro desde la última actualización.", None),
            (1, 0, "{PN} va lentísimo desde ayer.", None),
            (3, 1, "{PN} no funciona para nadie en la empresa, ¡estamos todos parados!", None),
            (1, 0, "Me sale el error «{ERR}» al usar {PN}.", None),
        ],
        "account": [
            (2, 0, "No puedo iniciar sesión en mi cuenta, el enlace para restablecer la contraseña nunca llega.", None),
            (2, 0, "Mi cuenta está bloqueada después de varios intentos y la necesito hoy.", None),
            (1, 0, "El código de verificación por SMS ya no me llega.", None),
            (0, 0, "¿Cómo cambio el correo electrónico de mi cuenta?", None),
        ],
        "security": [
            (3, 1, "Creo que han hackeado mi cuenta: hay accesos desde {COUNTRY} que no reconozco.", None),
            (3, 1, "Alguien cambió mi contraseña anoche sin mi permiso.", None),
            (2, 1, "Recibí un correo de phishing que se hace pasar por Lumio y pide mi contraseña.", None),
        ],
        "how_to": [
            (0, 0, "¿Cómo puedo exportar mis datos de {PN}?", None),
            (0, 0, "¿Es posible cambiar el idioma de {PN}?", None),
            (0, 0, "¿Dónde está la configuración de notificaciones en {PN}?", None),
        ],
        "feature_request": [
            (0, 0, "Sería genial que {PN} tuviera modo oscuro.", None),
            (0, 0, "Sugerencia: poder programar envíos en {PN}.", None),
            (0, 0, "¿Tienen previsto integrar {PN} con Slack?", None),
        ],
        "cancellation": [
            (1, 1, "Por favor, den de baja mi suscripción de {PN} al final del periodo.", None),
            (1, 1, "Quiero cerrar mi cuenta, es demasiado caro para nosotros.", None),
            (1, 1, "¿Cómo doy de baja {PN}? No quiero que se renueve.", None),
        ],
    },
    "de": {
        "billing": [
            (2, 1, "Mir wurde das {PN}-Abo diesen Monat doppelt abgebucht. Bitte erstatten Sie die {AMT}.", None),
            (1, 0, "Können Sie mir die Rechnung zur Bestellung {ORDER} schicken? Unsere Buchhaltung braucht sie.", None),
            (2, 1, "Ich habe {PN} letzten Monat gekündigt, aber Sie haben trotzdem {AMT} abgebucht.", None),
            (1, 0, "Warum ist meine {PN}-Rechnung auf {AMT} gestiegen? Ich habe den Tarif nicht geändert.", None),
        ],
        "bug": [
            (2, 0, "{PN} stürzt seit dem letzten Update jedes Mal beim Öffnen ab.", None),
            (1, 0, "{PN} ist seit gestern extrem langsam.", None),
            (3, 1, "{PN} ist für unsere ganze Firma komplett ausgefallen, niemand kann arbeiten!", None),
            (1, 0, "Ich bekomme die Fehlermeldung „{ERR}“, wenn ich {PN} benutze.", None),
        ],
        "account": [
            (2, 0, "Ich kann mich nicht mehr in mein Konto einloggen, der Link zum Zurücksetzen kommt nie an.", None),
            (2, 0, "Mein Konto ist nach zu vielen Versuchen gesperrt und ich brauche es heute.", None),
            (1, 0, "Der Bestätigungscode per SMS kommt nicht mehr an.", None),
            (0, 0, "Wie ändere ich die E-Mail-Adresse meines Kontos?", None),
        ],
        "security": [
            (3, 1, "Ich glaube, mein Konto wurde gehackt: Es gibt Anmeldungen aus {COUNTRY}, die ich nicht kenne.", None),
            (3, 1, "Jemand hat letzte Nacht ohne meine Erlaubnis mein Passwort geändert.", None),
            (2, 1, "Ich habe eine Phishing-Mail bekommen, die sich als Lumio ausgibt und nach meinem Passwort fragt.", None),
        ],
        "how_to": [
            (0, 0, "Wie kann ich meine Daten aus {PN} exportieren?", None),
            (0, 0, "Kann man die Sprache von {PN} ändern?", None),
            (0, 0, "Wo finde ich die Benachrichtigungseinstellungen in {PN}?", None),
        ],
        "feature_request": [
            (0, 0, "Es wäre toll, wenn {PN} einen Dunkelmodus hätte.", None),
            (0, 0, "Vorschlag: zeitversetztes Senden in {PN}.", None),
            (0, 0, "Ist eine Slack-Integration für {PN} geplant?", None),
        ],
        "cancellation": [
            (1, 1, "Bitte kündigen Sie mein {PN}-Abo zum Ende der Laufzeit.", None),
            (1, 1, "Ich möchte mein Konto schließen, es ist uns zu teuer.", None),
            (1, 1, "Wie kündige ich {PN}? Ich möchte keine Verlängerung.", None),
        ],
    },
}
# compiled: lang -> category -> tuple of (prio, nh, compiled, forced_product)
_TEMPLATES = {
    lang: {cat: tuple((p, bool(h), _compile(t), f) for p, h, t, f in items) for cat, items in cats.items()}
    for lang, cats in _T.items()
}
# everyday traffic: every template except those written for the new product's launch
_BASE_TEMPLATES = {
    lang: {cat: tuple(t for t in items if t[3] != "assist") for cat, items in cats.items()}
    for lang, cats in _TEMPLATES.items()
}
# launch traffic for the new product (drift): templates that name a product, assist-only ones included
_LAUNCH_TEMPLATES = {
    lang: {cat: tuple(t for t in items if t[2][1] and t[3] in (None, "assist")) for cat, items in cats.items()}
    for lang, cats in _TEMPLATES.items()
}

_GREET = {
    "en": _bank(["Hi,", "Hello,", "Hi team,", "Hey there,", "Dear Support,", "Good morning,", "Hello Lumio support,", "Hi there,"]),
    "fr": _bank(["Bonjour,", "Bonjour l'équipe,", "Bonjour Madame, Monsieur,"]),
    "es": _bank(["Hola,", "Buenos días,", "Estimado equipo de soporte:"]),
    "de": _bank(["Hallo,", "Guten Tag,", "Sehr geehrte Damen und Herren,", "Hallo zusammen,"]),
}
_SIGN = {
    "en": _bank(["Thanks,\n{NAME}", "Thank you,\n{NAME}", "Regards,\n{NAME}", "Best regards,\n{NAME}\n{COMPANY}",
                 "Kind regards,\n{NAME}\n{PHONE}", "Cheers,\n{FIRST}", "Thanks!", "Thanks in advance.",
                 "--\n{NAME} | {COMPANY} | {PHONE}", "Best,\n{NAME}\n{EMAIL}"]),
    "fr": _bank(["Merci,\n{NAME}", "Cordialement,\n{NAME}", "Bien à vous,\n{NAME}\n{PHONE}", "Merci d'avance."]),
    "es": _bank(["Gracias,\n{NAME}", "Saludos,\n{NAME}", "Un saludo,\n{NAME}\n{PHONE}", "Gracias de antemano."]),
    "de": _bank(["Danke,\n{NAME}", "Mit freundlichen Grüßen\n{NAME}", "Viele Grüße,\n{NAME}\n{PHONE}", "Vielen Dank im Voraus."]),
}
_MOBILE_SIGN = {"en": "Sent from my iPhone", "fr": "Envoyé de mon iPhone", "es": "Enviado desde mi iPhone",
                "de": "Von meinem iPhone gesendet"}
_PII_INTRO = {
    "en": _bank(["My name is {NAME}[ and I'm the admin of our workspace| from {COMPANY}|].",
                 "[You can reach me at|My email is|Please reply to] {EMAIL}.",
                 "[Call me on|My number is|Phone:] {PHONE}[ if that's easier|]."]),
    "fr": _bank(["Je m'appelle {NAME}.", "[Mon e-mail|Mon adresse] : {EMAIL}", "Mon numéro : {PHONE}"]),
    "es": _bank(["Me llamo {NAME}.", "Mi correo es {EMAIL}.", "Mi teléfono: {PHONE}"]),
    "de": _bank(["Mein Name ist {NAME}.", "Meine E-Mail-Adresse: {EMAIL}", "Telefon: {PHONE}"]),
}
_CARD = {
    "en": _bank(["The card [is|was] {CARD}[, exp 09/27|].", "Card number: {CARD}", "It's the card ending in {LAST4}."]),
    "fr": _bank(["Ma carte : {CARD}"]),
    "es": _bank(["Mi tarjeta: {CARD}"]),
    "de": _bank(["Meine Karte: {CARD}"]),
}
_ESCALATE = {
    "en": _bank(["This is the third time I'm writing about this.", "Nobody answered my last [two|three] emails.",
                 "I've been waiting [a week|five days|since Monday] for a reply.",
                 "I already opened a ticket about this ({ORDER}) and nothing happened."]),
    "fr": _bank(["C'est la troisième fois que j'écris à ce sujet.", "Personne n'a répondu à mes deux derniers messages."]),
    "es": _bank(["Es la tercera vez que escribo por esto.", "Nadie ha respondido a mis últimos correos."]),
    "de": _bank(["Ich schreibe jetzt zum dritten Mal deswegen.", "Auf meine letzten zwei E-Mails hat niemand geantwortet."]),
}
_IMPACT = {
    "en": _bank(["Our whole team of {N} people is blocked.", "We are losing [sales|customers|money] every hour this continues.",
                 "We have a client [demo|deadline] [tomorrow|this afternoon] that depends on this."]),
    "fr": _bank(["Toute notre équipe de {N} personnes est bloquée.", "Nous perdons des ventes à cause de ça."]),
    "es": _bank(["Todo nuestro equipo de {N} personas está bloqueado.", "Estamos perdiendo ventas por esto."]),
    "de": _bank(["Unser ganzes Team mit {N} Leuten ist blockiert.", "Wir verlieren deswegen Umsatz."]),
}
_HUMAN = {
    "en": _bank(["I'd like to talk to a real person, not a bot.", "Please have [someone|a human|an agent] call me back.",
                 "Can I speak to [an agent|a human|someone from support]?", "Please escalate this to a [manager|supervisor]."]),
    "fr": _bank(["Je voudrais parler à une vraie personne.", "Merci de me faire rappeler par un conseiller."]),
    "es": _bank(["Quiero hablar con una persona real.", "Por favor, que me llame un agente."]),
    "de": _bank(["Ich möchte mit einem echten Menschen sprechen.", "Bitte rufen Sie mich zurück."]),
}
_FAKE_URGENT = {
    "en": _bank(["URGENT!!", "Urgent:", "Please help asap.", "Need an answer ASAP!!", "urgent pls"]),
    "fr": _bank(["URGENT !!", "Merci de répondre au plus vite."]),
    "es": _bank(["¡¡URGENTE!!", "Por favor, respondan lo antes posible."]),
    "de": _bank(["DRINGEND!!", "Bitte schnell antworten."]),
}
_CONNECT = {
    "en": ("Also, another thing:", "Another thing:", "Oh and", "Separately:", "And one more issue:", "Also:"),
    "fr": ("Autre chose :", "Et aussi :"),
    "es": ("Otra cosa:", "Además:"),
    "de": ("Noch etwas:", "Außerdem:"),
}
_SUBJECT = {
    "billing": ("Billing question", "Double charge", "Invoice request", "Refund", "Wrong amount charged"),
    "bug": ("Bug", "Not working", "Error", "App crashing", "Problem with {PN}"),
    "account": ("Login problem", "Can't access my account", "Account help", "2FA issue"),
    "security": ("Security issue", "Account hacked?", "Suspicious activity"),
    "how_to": ("Question", "How to?", "Quick question"),
    "feature_request": ("Suggestion", "Feature request", "Idea"),
    "cancellation": ("Cancel subscription", "Cancellation", "Closing account"),
}
_SUBJECT = {k: _bank(v) for k, v in _SUBJECT.items()}
_SUBJECT_GENERIC = {
    "en": _bank(["Help", "Help needed", "Support request", "Re: ticket {ORDER}", "(no subject)", "Question", "Issue"]),
    "fr": _bank(["Problème", "Question", "Aide", "Demande"]),
    "es": _bank(["Problema", "Consulta", "Ayuda"]),
    "de": _bank(["Problem", "Frage", "Hilfe", "Anfrage"]),
}
_SUBJECT_WORD = {"en": "Subject", "fr": "Objet", "es": "Asunto", "de": "Betreff"}
_FOLLOW_UP = {
    "en": ("any update??", "Any update on this?", "Still waiting...", "Hello?? any news", "Following up on this.", "bump"),
    "fr": ("Des nouvelles ?", "Toujours rien ?"),
    "es": ("¿Alguna novedad?", "¿Hay noticias?"),
    "de": ("Gibt es Neuigkeiten?", "Noch keine Antwort?"),
}
_RESEND_PREFIX = ("Resending: ", "Following up - ", "2nd try: ", "Fwd: ", "RE: ")
# a foreign speaker's English note, for mixed-language tickets written in English
_EN_FROM_FOREIGN = ("Sorry for my English.", "(Sorry, English is not my first language.)", "Sorry for mistakes in my English.")

# --- slot values --------------------------------------------------------------------------------
_PN = {"drive": ("Lumio Drive", "Drive", "LumioDrive", "lumio drive"), "mail": ("Lumio Mail", "Mail", "LumioMail"),
       "calendar": ("Lumio Calendar", "Calendar", "lumio calendar"), "pay": ("Lumio Pay", "Pay", "LumioPay"),
       "assist": ("Lumio Assist", "Assist", "Assist beta"), "general": ("Lumio", "Lumio One", "Lumio Business")}
_PA = {"drive": ("the desktop sync app", "the file sync", "my Drive folder", "the Drive app"),
       "mail": ("the webmail", "my inbox", "the Mail app", "the email app"),
       "calendar": ("the calendar app", "the scheduling page", "the Calendar widget"),
       "pay": ("the payments dashboard", "the checkout page", "the Pay dashboard"),
       "assist": ("the AI assistant", "the copilot", "the AI sidebar", "the new AI helper"),
       "general": ("the app", "the web app", "your platform", "the dashboard")}
_F = {"drive": ("file previews", "the sync", "shared folders", "uploads", "version history", "the trash folder"),
      "mail": ("the inbox", "attachments", "search", "the spam filter", "signatures", "shared mailboxes"),
      "calendar": ("meeting invites", "recurring events", "the week view", "room booking", "reminders", "time zones"),
      "pay": ("payouts", "payment links", "the invoice PDF", "refunds", "the checkout", "card payments"),
      "assist": ("the AI summaries", "smart replies", "meeting notes", "the chat panel", "translations", "search answers"),
      "general": ("the settings page", "notifications", "the dashboard", "search", "the admin console", "the mobile app")}
_HOWTO = {"drive": ("share a folder with someone outside my company", "restore an older version of a file",
                    "sync only some folders", "recover deleted files", "see who opened a shared file"),
          "mail": ("set up an auto-reply", "add a shared mailbox", "create a filter for newsletters",
                   "import my old Gmail emails", "change my email signature"),
          "calendar": ("share my calendar with my assistant", "set my working hours", "add a video link to invites",
                       "create a recurring meeting", "book a meeting room"),
          "pay": ("send a payment link", "issue a partial refund to my customer", "export my payouts", "add a tax rate",
                  "accept payments in euros"),
          "assist": ("turn off AI summaries for one folder", "make Assist answer in French",
                     "connect Assist to our shared drive", "stop Assist from reading my emails", "write better prompts"),
          "general": ("change the language of the interface", "enable two-factor authentication", "export all my data",
                      "add a user to our team", "change my profile picture")}
_FEAT = {"drive": ("lock files while someone edits them", "see folder sizes", "sync to an external disk",
                   "set expiry dates on shared links"),
         "mail": ("schedule emails", "snooze emails", "undo send for longer than 10 seconds", "use more than one signature"),
         "calendar": ("show week numbers", "set a time zone per event", "see colleagues' free slots", "hide declined events"),
         "pay": ("accept SEPA direct debit", "send automatic payment reminders", "split payouts between accounts",
                 "customize the checkout colors"),
         "assist": ("cite its sources", "run on our own servers", "summarize voice messages", "use our company glossary"),
         "general": ("use a dark mode", "log in with Okta SSO", "export audit logs", "pick a different start page")}
_FIRST = ("Anna", "Marco", "Sophie", "Lukas", "Chen", "Priya", "James", "Fatima", "Olivia", "Mateo", "Yuki", "Noah",
          "Emma", "Ahmed", "Lucía", "Thomas", "Camille", "Jonas", "Aisha", "David", "Elena", "Pierre", "Sara",
          "Kenji", "Laura", "Omar", "Julia", "Hannah", "Diego", "Mia", "Grace", "Tomasz")
_LAST = ("Müller", "García", "Martin", "Rossi", "Smith", "Nguyen", "Kowalski", "Dubois", "Fernández", "Schmidt",
         "Johnson", "Okafor", "Tanaka", "Silva", "Novak", "Bernard", "López", "Weber", "Brown", "Khan", "Jensen",
         "Moreau", "Patel", "Ivanova", "O'Brien", "Haddad")
_MAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.fr", "web.de", "acme-corp.com", "brightside.co.uk", "hotmail.es",
                 "proton.me")
_COMPANY = ("Acme GmbH", "Brightside Ltd", "Nordlicht AG", "Cafe Soleil", "Vega Logistics", "Pixel & Co",
            "Dunmore Legal", "Atelier Mora", "Kestrel Health", "Bluefin Studio")
_COUNTRY = ("Brazil", "Vietnam", "Nigeria", "Russia", "Indonesia", "Romania", "Panama", "Kazakhstan")
_ERR = ("Error 500", "ERR_SYNC_409", "Something went wrong (code 0x80070005)", "403 Forbidden", "Request timed out",
        "Unexpected token < in JSON", "E-1042: quota exceeded")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_CURRENCY = ("${}", "€{}", "£{}", "{} €")
_PRICES = ("9.99", "12.00", "19.99", "29.00", "49.00", "99.00", "120.00", "240.00", "1,200.00")
_ASCII = str.maketrans({"ü": "ue", "í": "i", "á": "a", "é": "e", "ó": "o", "ñ": "n", "'": ""})


def _pick(seq, rnd):
    return seq[int(rnd() * len(seq))]


def _luhn_card(rnd) -> str:
    digits = [4] if rnd() < 0.6 else [5, 1 + int(rnd() * 5)]
    while len(digits) < 15:
        digits.append(int(rnd() * 10))
    total = 0
    for i, d in enumerate(reversed(digits)):  # positions that get doubled once the check digit is appended
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    sep = _pick((" ", "-", "", " "), rnd)
    return sep.join((s[0:4], s[4:8], s[8:12], s[12:16]))


def _phone(rnd) -> str:
    def d(k: int) -> str:
        return "".join(str(int(rnd() * 10)) for _ in range(k))

    f = int(rnd() * 7)
    if f == 0:
        return f"+1 415-555-{d(4)}"
    if f == 1:
        return f"({d(3)}) 555-{d(4)}"
    if f == 2:
        return f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}"
    if f == 3:
        return f"+49 151 {d(8)}"
    if f == 4:
        return f"+34 6{d(2)} {d(3)} {d(3)}"
    if f == 5:
        return f"07{d(3)} {d(6)}"
    return f"+44 7700 900{d(3)}"


class _Slots(dict):
    """Slot values for one ticket, made on first use so each ticket only pays for what it names."""

    __slots__ = ("rnd", "product")

    def __init__(self, rnd, product: str):
        super().__init__()
        self.rnd = rnd
        self.product = product

    def __missing__(self, key: str) -> str:
        rnd, p = self.rnd, self.product
        if key in ("NAME", "FIRST"):
            first, last = _pick(_FIRST, rnd), _pick(_LAST, rnd)
            self["FIRST"], self["NAME"] = first, f"{first} {last}"
            return self[key]
        if key == "PN":
            v = _pick(_PN[p], rnd)
        elif key in ("PA", "PAL"):
            v = _pick(_PA[p], rnd)
        elif key == "PAC":
            v = self["PAL"]
            v = v[0].upper() + v[1:]
        elif key == "F":
            v = _pick(_F[p], rnd)
        elif key == "HOWTO":
            v = _pick(_HOWTO[p], rnd)
        elif key == "FEAT":
            v = _pick(_FEAT[p], rnd)
        elif key == "NAME2":
            v = f"{_pick(_FIRST, rnd)} {_pick(_LAST, rnd)}"
        elif key == "EMAIL":
            name = self.get("NAME") or f"{_pick(_FIRST, rnd)} {_pick(_LAST, rnd)}"
            first, _, last = name.lower().translate(_ASCII).partition(" ")
            local = _pick((f"{first}.{last}", f"{first[0]}{last}", f"{first}{int(rnd() * 90) + 10}"), rnd)
            v = f"{local}@{_pick(_MAIL_DOMAINS, rnd)}"
        elif key == "PHONE":
            v = _phone(rnd)
        elif key == "CARD":
            v = _luhn_card(rnd)
        elif key == "LAST4":
            v = f"{int(rnd() * 10000):04d}"
        elif key == "ORDER":
            v = f"#{10000 + int(rnd() * 90000)}"
        elif key == "INVOICE":
            v = f"INV-2026-{int(rnd() * 100000):05d}"
        elif key == "AMT":
            v = _pick(_CURRENCY, rnd).format(_pick(_PRICES, rnd))
        elif key == "DATE":
            v = f"{_pick(_MONTHS, rnd)} {1 + int(rnd() * 28)}"
        elif key == "MONTH":
            v = _pick(_MONTHS, rnd)
        elif key == "ERR":
            v = _pick(_ERR, rnd)
        elif key == "COUNTRY":
            v = _pick(_COUNTRY, rnd)
        elif key == "COMPANY":
            v = _pick(_COMPANY, rnd)
        elif key == "N":
            v = str(5 + int(rnd() * 245))
        else:
            raise KeyError(key)
        self[key] = v
        return v


# --- typos --------------------------------------------------------------------------------------
_KEY_NEIGHBORS = {
    "a": "qsz", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo", "j": "hk",
    "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "w", "r": "et", "s": "ad", "t": "ry",
    "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}


def _typos(text: str, rnd, rate: float) -> str:
    k = int(len(text) * rate + rnd())
    if k <= 0 or len(text) < 4:
        return text
    chars = list(text)
    for _ in range(k):
        i = int(rnd() * (len(chars) - 1))
        c = chars[i]
        if not c.isalpha():
            continue
        op = rnd()
        if op < 0.35:  # swap with the next character
            chars[i], chars[i + 1] = chars[i + 1], c
        elif op < 0.6:  # drop
            del chars[i]
        elif op < 0.75:  # double
            chars.insert(i, c)
        else:  # neighbouring key
            nb = _KEY_NEIGHBORS.get(c.lower())
            if nb:
                chars[i] = nb[int(rnd() * len(nb))]
    return "".join(chars)


# --- one ticket ---------------------------------------------------------------------------------
def _weighted(weights: dict[str, float]):
    keys = tuple(weights)
    total = sum(weights.values())
    cum, acc = [], 0.0
    for k in keys:
        acc += weights[k] / total
        cum.append(acc)
    cum[-1] = 1.0
    return keys, tuple(cum)


def _draw(table, rnd) -> str:
    keys, cum = table
    r = rnd()
    for k, c in zip(keys, cum):
        if r < c:
            return k
    return keys[-1]


class _Tables:
    """Sampling tables for one drift level (built once per simulate() call)."""

    def __init__(self, drift: float):
        d = min(max(float(drift), 0.0), 1.0)
        self.drift = d
        cat = dict(_CATEGORY_W)
        cat["bug"] += 0.10 * d
        self.category = _weighted(cat)
        prod = dict(_PRODUCT_W)
        prod["assist"] += 0.25 * d
        self.product = _weighted(prod)
        self.launch_category = _weighted(_LAUNCH_CATEGORY_W)
        ch = dict(_CHANNEL_W)
        ch["chat"] += 0.25 * d
        self.channel = _weighted(ch)
        self.non_en = _NON_EN_BASE + _NON_EN_DRIFT * d
        self.launch = _LAUNCH_DRIFT * d


def _issue(rnd, tables: _Tables, lang: str, category: str | None, launch: bool):
    """One issue: (category, product, priority, needs_human, text, slots)."""
    if launch:
        category = category or _draw(tables.launch_category, rnd)
        pool = _LAUNCH_TEMPLATES[lang][category]
        prio, nh, compiled, _forced = _pick(pool, rnd)
        product = "assist"
    else:
        category = category or _draw(tables.category, rnd)
        prio, nh, compiled, forced = _pick(_BASE_TEMPLATES[lang][category], rnd)
        if forced:
            product = forced
        elif compiled[1]:
            product = _draw(tables.product, rnd)
        else:
            product = "general"
    slots = _Slots(rnd, product)
    text = _render(compiled, rnd, slots)
    return category, product, prio, nh, text, slots


def _ticket(rnd, tables: _Tables, typo_rate: float):
    """Text, truth and slice of one original (non-duplicate) ticket."""
    r = rnd()
    if r < tables.non_en:
        lang = LANGUAGES[1 + int(rnd() * 3)]
    else:
        lang = "en"
    channel = _draw(tables.channel, rnd)
    launch = rnd() < tables.launch
    category, product, prio, nh, text, slots = _issue(rnd, tables, lang, None, launch)
    issues = [(category, product, prio, nh, text)]
    multi = rnd() < MULTI_ISSUE_RATE
    if multi:
        other = category
        while other == category:
            other = _draw(tables.category, rnd)
        c2, p2, pr2, nh2, t2, _ = _issue(rnd, tables, lang, other, False)
        issues.append((c2, p2, pr2, nh2, t2))
        if rnd() < 0.5:
            issues.reverse()

    # modifiers, visible in the text, read by the truth rules
    impact = rnd() < 0.08 and category in ("bug", "account", "billing")
    escalate = rnd() < 0.06
    human = rnd() < 0.06
    fake_urgent = rnd() < 0.09

    # truth: the issue with the higher priority leads (ties: PRECEDENCE)
    lead = min(issues, key=lambda it: (-it[2], PRECEDENCE.index(it[0])))
    priority = min(3, lead[2] + impact + escalate)
    needs_human = (any(it[3] for it in issues) or escalate or human or priority == 3
                   or any(it[0] in ("security", "cancellation") for it in issues))
    truth = {"category": lead[0], "priority": PRIORITIES[priority], "product": lead[1],
             "needs_human": bool(needs_human), "language": lang}

    # text: issue(s) with typos, modifiers, PII, greeting, signature, subject
    typo_prone = rnd() < (0.6 if channel in ("chat", "mobile_app") else 0.3)
    body = []
    for idx, it in enumerate(issues):
        t = _typos(it[4], rnd, typo_rate) if typo_prone else it[4]
        if idx:
            t = f"{_pick(_CONNECT[lang], rnd)} {t}"
        body.append(t)
    if category == "billing" and rnd() < 0.2:
        body.append(_render(_pick(_CARD[lang], rnd), rnd, slots))
    extras = []
    if impact:
        extras.append(_render(_pick(_IMPACT[lang], rnd), rnd, slots))
    if escalate:
        extras.append(_render(_pick(_ESCALATE[lang], rnd), rnd, slots))
    if human:
        extras.append(_render(_pick(_HUMAN[lang], rnd), rnd, slots))
    if rnd() < 0.2:
        extras.append(_render(_pick(_PII_INTRO[lang], rnd), rnd, slots))
    for e in extras:  # sentence order varies: most extras follow the issue, some come first
        if rnd() < 0.3:
            body.insert(0, e)
        else:
            body.append(e)
    if fake_urgent:
        u = _render(_pick(_FAKE_URGENT[lang], rnd), rnd, slots)
        if rnd() < 0.5:
            body.insert(0, u)
        else:
            body.append(u)

    mixed = rnd() < (0.08 if lang == "en" else 0.25)
    greet_lang = sign_lang = lang
    if mixed:
        if lang == "en":  # English body, greeting or sign-off in the writer's own language
            other = LANGUAGES[1 + int(rnd() * 3)]
            if rnd() < 0.5:
                greet_lang = other
            else:
                sign_lang = other
            if rnd() < 0.4:
                body.append(_pick(_EN_FROM_FOREIGN, rnd))
        else:  # foreign body, English greeting and/or sign-off
            greet_lang = "en" if rnd() < 0.7 else lang
            sign_lang = "en" if rnd() < 0.6 else lang

    if channel == "chat":
        sep = " "
        text = sep.join(body)
        if rnd() < 0.4:
            text = text.lower()
        if rnd() < 0.3:
            text = _render(_pick(_GREET[greet_lang], rnd), rnd, slots).rstrip(",:") + " " + text
    else:
        sep = "\n\n" if channel == "email" else ("\n" if rnd() < 0.5 else " ")
        parts = []
        p_greet = {"email": 0.85, "web_form": 0.5, "mobile_app": 0.35}[channel]
        if mixed and greet_lang != lang:
            p_greet = 1.0
        if rnd() < p_greet:
            parts.append(_render(_pick(_GREET[greet_lang], rnd), rnd, slots))
        parts.append(" ".join(body))
        if channel == "mobile_app":
            if rnd() < 0.5:
                parts.append(_MOBILE_SIGN[sign_lang])
        else:
            p_sign = {"email": 0.8, "web_form": 0.4}[channel]
            if mixed and sign_lang != lang:
                p_sign = 1.0
            if rnd() < p_sign:
                parts.append(_render(_pick(_SIGN[sign_lang], rnd), rnd, slots))
        text = sep.join(parts)
        if channel in ("email", "web_form") and rnd() < 0.45:
            if lang == "en" and rnd() < 0.6:
                subj = _render(_pick(_SUBJECT[issues[0][0]], rnd), rnd, slots)
            else:
                subj = _render(_pick(_SUBJECT_GENERIC[lang], rnd), rnd, slots)
            text = f"{_SUBJECT_WORD[lang]}: {subj}\n\n{text}"

    slice_ = {"category": truth["category"], "language": lang, "multi_issue": multi, "channel": channel,
              "product": truth["product"]}
    return text, truth, slice_


def _near_duplicate(text: str, lang: str, rnd) -> str:
    """The same ticket again with a small change: a follow-up line, a prefix or one changed word."""
    r = rnd()
    if r < 0.5:
        return f"{text}{_pick((' ', chr(10), chr(10) + chr(10)), rnd)}{_pick(_FOLLOW_UP[lang], rnd)}"
    if r < 0.7:
        return _pick(_RESEND_PREFIX, rnd) + text
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
    if not candidates:
        return text + " " + _pick(_FOLLOW_UP[lang], rnd)
    i = _pick(candidates, rnd)
    w = words[i]
    j = 1 + int(rnd() * (len(w) - 2))
    swapped = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    if rnd() < 0.5 or swapped == w:
        del words[i]
    else:
        words[i] = swapped
    return " ".join(words)


# --- the API ------------------------------------------------------------------------------------
def _rng_seed(seed: int, day: str | None) -> int:
    if day is None:
        return int(seed)
    digest = hashlib.blake2b(f"{seed}|{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def simulate(n: int, seed: int = 0, day: str | None = None, drift: float = 0.0, *,
             typo_rate: float = TYPO_RATE) -> Iterator[dict]:
    """Yield `n` simulated capture turns.

    Content is a pure function of (seed, day, drift): with `day=None` it depends on the seed alone
    (timestamps fall on today, UTC); with a day, that day is mixed into the seed so every capture
    day differs even when the caller keeps the seed fixed. `drift` in [0, 1] moves traffic
    towards the new product (Lumio Assist), non-English tickets and chat.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= float(drift) <= 1.0:
        raise ValueError(f"drift must be in [0, 1], found {drift}")
    day_str = day or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    day_start = timegm(time.strptime(day_str, "%Y-%m-%d"))
    rnd = random.Random(_rng_seed(seed, day)).random
    tables = _Tables(drift)
    prefix = "st-" + hashlib.blake2b(f"{seed}|{day or ''}|{float(drift):g}".encode(), digest_size=5).hexdigest()
    step = 86400.0 / max(n, 1)
    history: list[tuple[str, str, dict, dict]] = []  # recent originals: (id, text, truth, slice)
    strftime, gmtime = time.strftime, time.gmtime
    for i in range(n):
        tid = f"{prefix}-{i:07d}"
        ts = strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(day_start + int((i + rnd()) * step)))
        r = rnd()
        dup = None
        if history and r < EXACT_DUP_RATE + NEAR_DUP_RATE:
            src_id, src_text, truth, slice_ = history[len(history) - 1 - int(rnd() * min(len(history), DUP_WINDOW))]
            if r < EXACT_DUP_RATE:
                text, dup = src_text, {"duplicate_of": src_id, "kind": "exact"}
            else:
                text, dup = _near_duplicate(src_text, slice_["language"], rnd), {"duplicate_of": src_id, "kind": "near"}
        else:
            text, truth, slice_ = _ticket(rnd, tables, typo_rate)
            history.append((tid, text, truth, slice_))
            if len(history) > 2 * DUP_WINDOW:
                del history[:DUP_WINDOW]
        meta = {"captured_at": ts, "source": "simulated", "slice": dict(slice_)}
        if dup is not None:
            meta["simulation"] = dup  # ground truth for dedupe tests; the platform never reads it
        yield {
            "id": tid,
            "domain": DOMAIN,
            "role": ROLE,
            "input": {"messages": [{"role": "user", "content": text}]},
            "output": dict(truth),
            "labels": {"capture": dict(truth)},
            "meta": meta,
        }


def as_gold(turn: dict) -> dict:
    """A simulated turn as a seed row: the simulator's truth moves to labels.gold (no person reviewed it)."""
    turn["labels"] = {"gold": turn["labels"]["capture"]}
    turn["meta"]["source"] = "seed"
    return turn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulate support tickets as capture-format JSONL turns.")
    ap.add_argument("--n", type=int, default=1000, help="number of turns")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--day", default=None, help="capture day YYYY-MM-DD (default: today, UTC)")
    ap.add_argument("--drift", type=float, default=0.0, help="0..1: shift towards the new product, languages, chat")
    ap.add_argument("--typo-rate", type=float, default=TYPO_RATE, help="per-character typo rate in typo-prone tickets")
    ap.add_argument("--gold", action="store_true", help="write labels.gold instead of labels.capture (seed sets)")
    ap.add_argument("--out", default=None, help="output file (default: stdout)")
    args = ap.parse_args(argv)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for turn in simulate(args.n, args.seed, args.day, args.drift, typo_rate=args.typo_rate):
            if args.gold:
                turn = as_gold(turn)
            out.write(json.dumps(turn, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
