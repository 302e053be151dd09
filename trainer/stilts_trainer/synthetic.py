"""The offline world: a small English grammar, 15 synthetic languages and the tasks built on them.

Sentences are generated as structures (subject, verb, object, place) and rendered into a language,
so the same NLI example exists in all 15 languages, as XNLI's are translations of one English set.
Languages differ the way real ones do, in graded amounts: their own words (a share of cognates with
English in the Latin-script ones, none in others), their own script, word order (SVO, SOV, VSO),
adjective position, and for zh/th no spaces between words. The MLM corpus code-switches a little,
as web text does; those shared contexts are what lets a tiny model align languages at all.

Everything is a pure function of its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from stilts_contract.names import XNLI_LANGUAGES

NLI_LABELS = ("entailment", "neutral", "contradiction")  # the GLUE/XNLI label order

NOUNS = (
    "cat dog bird horse child teacher farmer doctor king queen sailor baker student driver singer "
    "painter river house garden market ship bridge tower forest village castle boat wagon lamp "
    "letter apple bread stone song book door window mountain island road table"
).split()
ADJECTIVES = "red blue green old young big small tall quiet loud happy sad brave clever tired warm cold dark".split()
VERBS = "sees finds likes helps follows paints carries watches calls builds opens hides".split()
# Each verb's opposite: "the cat likes the dog" contradicts "the cat hates the dog".
ANTONYMS = {
    "sees": "ignores", "finds": "loses", "likes": "hates", "helps": "hinders", "follows": "leads",
    "paints": "scrapes", "carries": "drops", "watches": "avoids", "calls": "forgets",
    "builds": "breaks", "opens": "closes", "hides": "shows",
}
PLACES = "near behind under beside".split()
SYNONYMS = {"big": "large", "small": "little", "happy": "glad", "quiet": "silent", "clever": "smart", "sees": "spots"}
FUNCTION_WORDS = ["the", "not", "does", "?", "and", "but"]


@dataclass(frozen=True)
class Language:
    code: str
    script: str          # which alphabet its words are spelled in
    order: str           # SVO | SOV | VSO
    adjective_after: bool
    cognates: float      # share of content words spelled as in English
    spaces: bool = True


LANGUAGES = {
    lang.code: lang
    for lang in (
        Language("en", "latin", "SVO", False, 1.0),
        Language("de", "latin", "SOV", False, 0.35),
        Language("es", "latin", "SVO", True, 0.45),
        Language("fr", "latin", "SVO", True, 0.45),
        Language("vi", "latin", "SVO", True, 0.15),
        Language("sw", "latin", "SVO", True, 0.1),
        Language("tr", "latin", "SOV", False, 0.1),
        Language("bg", "cyrillic", "SVO", False, 0.0),
        Language("ru", "cyrillic", "SVO", False, 0.0),
        Language("el", "greek", "SVO", False, 0.0),
        Language("ar", "arabic", "VSO", True, 0.0),
        Language("ur", "arabic", "SOV", True, 0.0),
        Language("hi", "devanagari", "SOV", False, 0.0),
        Language("th", "thai", "SVO", True, 0.0, spaces=False),
        Language("zh", "han", "SVO", False, 0.0, spaces=False),
    )
}

_SCRIPTS = {
    "latin": ("bcdfghklmnprstvz", "aeiou"),
    "cyrillic": ("бвгдзклмнпрстфх", "аеиоуя"),
    "greek": ("βγδζκλμνπρστφχ", "αεηιου"),
    "arabic": ("بتثجحخدذرزسشصض", "اوي"),
    "devanagari": ("कखगघचजटडतदनपबम", "ािीुेो"),
    "thai": ("กขคงจชซดตถทนบปผพมยรลวส", "ะาิีุูเแ"),
}


def _spell(rng: random.Random, script: str, syllables: int) -> str:
    if script == "han":
        return "".join(chr(rng.randrange(0x4E00, 0x4E00 + 3000)) for _ in range(max(1, syllables - 1)))
    consonants, vowels = _SCRIPTS[script]
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))


def english_words() -> list[str]:
    words = NOUNS + ADJECTIVES + VERBS + list(ANTONYMS.values()) + PLACES + list(SYNONYMS.values())
    return list(dict.fromkeys(words + FUNCTION_WORDS))


@lru_cache(maxsize=None)
def lexicon(code: str) -> dict[str, str]:
    """English word -> word in language `code`; fixed for all seeds (a language does not change)."""
    lang = LANGUAGES[code]
    if code == "en":
        return {word: word for word in english_words()}
    rng = random.Random(f"lexicon-{code}")
    out: dict[str, str] = {}
    used: set[str] = set()
    for word in english_words():
        if word == "?":
            out[word] = word
            continue
        if word not in FUNCTION_WORDS and rng.random() < lang.cognates:
            out[word] = word
            used.add(word)
            continue
        while True:
            candidate = _spell(rng, lang.script, rng.choice((2, 2, 3)))
            if candidate not in used:
                break
        used.add(candidate)
        out[word] = candidate
    return out


@dataclass(frozen=True)
class Clause:
    subject: str
    subject_adj: str | None
    verb: str
    object: str
    object_adj: str | None
    negated: bool = False
    place: tuple[str, str] | None = None  # (preposition, noun)


def random_clause(rng: random.Random, modifiers: float = 0.7) -> Clause:
    subject, obj = rng.sample(NOUNS, 2)
    return Clause(
        subject=subject,
        subject_adj=rng.choice(ADJECTIVES) if rng.random() < modifiers else None,
        verb=rng.choice(VERBS),
        object=obj,
        object_adj=rng.choice(ADJECTIVES) if rng.random() < modifiers else None,
        place=(rng.choice(PLACES), rng.choice(NOUNS)) if rng.random() < modifiers else None,
    )


def _noun_phrase(lang: Language, noun: str, adj: str | None) -> list[str]:
    words = [noun] if adj is None else ([noun, adj] if lang.adjective_after else [adj, noun])
    return ["the", *words]


def render(clause: Clause, code: str, rng: random.Random | None = None, code_switch: float = 0.0) -> str:
    lang = LANGUAGES[code]
    subject = _noun_phrase(lang, clause.subject, clause.subject_adj)
    obj = _noun_phrase(lang, clause.object, clause.object_adj)
    verb = ["not", clause.verb] if clause.negated else [clause.verb]
    core = {"SVO": subject + verb + obj, "SOV": subject + obj + verb, "VSO": verb + subject + obj}[lang.order]
    if clause.place:
        core += [clause.place[0], "the", clause.place[1]]
    words = lexicon(code)
    rendered = [
        word if (rng is not None and rng.random() < code_switch) else words[word]
        for word in core
    ]
    return (" " if lang.spaces else "").join(rendered)


# ---------------------------------------------------------------------------------------------
# Tasks. Each returns plain examples in the schema of the real task's hub dataset.


def nli_pair(rng: random.Random, hard: bool = False) -> tuple[Clause, Clause, int]:
    """A premise, a hypothesis and its label. `hard` (the ANLI-like variant) adds distractors."""
    premise = random_clause(rng, modifiers=0.9 if hard else 0.7)
    label = rng.randrange(3)
    base = Clause(premise.subject, None, premise.verb, premise.object, None)
    if label == 0:  # entailment: the premise with details dropped (some kept)
        keep_adj = rng.random() < 0.5
        hypothesis = Clause(base.subject, premise.subject_adj if keep_adj else None, base.verb, base.object, None)
    elif label == 1:  # neutral: adds a detail the premise does not give
        extra = rng.choice([a for a in ADJECTIVES if a != premise.object_adj])
        hypothesis = Clause(base.subject, None, base.verb, base.object, extra)
    else:  # contradiction: negation, or the verb's antonym
        if rng.random() < 0.5:
            hypothesis = Clause(base.subject, None, base.verb, base.object, None, negated=True)
        else:
            hypothesis = Clause(base.subject, None, ANTONYMS[base.verb], base.object, None)
    return premise, hypothesis, label


def nli_examples(seed: int, n: int, code: str = "en", hard: bool = False) -> list[dict]:
    """NLI in the GLUE/XNLI schema: premise, hypothesis, label (0 entail, 1 neutral, 2 contradict)."""
    rng = random.Random(f"nli-{seed}-{hard}")
    out = []
    for _ in range(n):
        premise, hypothesis, label = nli_pair(rng, hard)
        text = render(premise, code)
        if hard:  # a distractor clause about other nouns: the label must come from the right one
            text = text + (" " if LANGUAGES[code].spaces else "") + render(random_clause(rng, 0.3), code)
        out.append({"premise": text, "hypothesis": render(hypothesis, code), "label": label})
    return out


def _question(clause: Clause, synonyms: bool, rng: random.Random) -> str:
    words = ["does", "the"]
    if clause.subject_adj:
        adj = SYNONYMS.get(clause.subject_adj, clause.subject_adj) if synonyms else clause.subject_adj
        words.append(adj)
    verb = clause.verb[:-1] if clause.verb.endswith("s") else clause.verb
    words += [clause.subject, verb, "the", clause.object, "?"]
    return " ".join(words)


def paraphrase_examples(seed: int, n: int) -> list[dict]:
    """QQP's schema: question1, question2, label (1 = duplicate)."""
    rng = random.Random(f"qqp-{seed}")
    out = []
    for _ in range(n):
        clause = random_clause(rng)
        label = rng.randrange(2)
        if label:
            other = clause
        else:
            other = Clause(clause.subject, clause.subject_adj, clause.verb,
                           rng.choice([x for x in NOUNS if x != clause.object]), clause.object_adj)
        out.append({"question1": _question(clause, False, rng),
                    "question2": _question(other, rng.random() < 0.5, rng), "label": label})
    return out


def mlm_corpus(seed: int, sentences_per_language: int, languages=XNLI_LANGUAGES,
               code_switch_share: float = 0.3, code_switch_rate: float = 0.3) -> list[str]:
    """Monolingual text in every language; a share of sentences code-switch some words to English."""
    rng = random.Random(f"corpus-{seed}")
    lines = []
    for code in languages:
        for _ in range(sentences_per_language):
            clause = random_clause(rng)
            if rng.random() < 0.2:
                clause = Clause(clause.subject, clause.subject_adj, clause.verb, clause.object,
                                clause.object_adj, True, clause.place)
            switch = code_switch_rate if (code != "en" and rng.random() < code_switch_share) else 0.0
            lines.append(render(clause, code, rng, switch))
    rng.shuffle(lines)
    return lines
