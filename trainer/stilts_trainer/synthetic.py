"""The offline world: a small English grammar, 15 synthetic languages and the tasks built on them.

Sentences are generated as structures (subject, verb, object, place) and rendered into a language,
so the same NLI example exists in all 15 languages, as XNLI's are translations of one English set.

A tiny model only learns cross-lingual representations when the data gives it what the literature
found necessary (README, "The offline world"):
- one clause stream rendered into every language (a comparable corpus), and a share of
  translation-pair lines, English and a translation side by side (Lample & Conneau 2019's TLM);
- shared anchors: special tokens, positions and punctuation (Dufter & Schütze 2020);
- every word the tasks' labels depend on (negation, antonyms, synonyms) occurs in pretraining;
- Zipfian word frequencies and selectional preferences (animate subjects, verbs that take things or
  beings), so that words have distinct contexts to align by.

Languages vary one factor at a time away from a "fake English" (English grammar, its own words), so
transfer is graded and explainable: a share of cognates, the script, the word order.
LANGUAGES below is the table the README prints.

Everything is a pure function of its seed. WORLD is the generator's version: it is part of every
synthetic job's identity (job.json `syntheticWorld`), so a changed world never reuses old results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache

from stilts_contract.names import SYNTHETIC_WORLD as WORLD, XNLI_LANGUAGES  # noqa: F401

NLI_LABELS = ("entailment", "neutral", "contradiction")  # the GLUE/XNLI label order

ANIMATE = ("cat dog bird horse child teacher farmer doctor king queen sailor baker student driver singer "
           "painter").split()
THINGS = ("river house garden market ship bridge tower forest village castle boat wagon lamp letter apple "
          "bread stone song book door window mountain island road table").split()
NOUNS = ANIMATE + THINGS
ADJECTIVES = "red blue green old young big small tall quiet loud happy sad brave clever tired warm cold dark".split()
# Each verb takes beings, things, or either as its object (selectional preference).
VERB_OBJECTS = {"sees": NOUNS, "finds": NOUNS, "likes": NOUNS, "helps": ANIMATE, "follows": ANIMATE,
                "paints": THINGS, "carries": THINGS, "watches": NOUNS, "calls": ANIMATE, "builds": THINGS,
                "opens": THINGS, "hides": NOUNS}
VERBS = list(VERB_OBJECTS)
# Each verb's opposite: "the cat likes the dog" contradicts "the cat hates the dog".
ANTONYMS = {
    "sees": "ignores", "finds": "loses", "likes": "hates", "helps": "hinders", "follows": "leads",
    "paints": "scrapes", "carries": "drops", "watches": "avoids", "calls": "forgets",
    "builds": "breaks", "opens": "closes", "hides": "shows",
}
PLACES = "near behind under beside".split()
SYNONYMS = {"big": "large", "small": "little", "happy": "glad", "quiet": "silent", "clever": "smart", "sees": "spots"}
FUNCTION_WORDS = ["the", "not", "does", "and", "but"]
# Spelled the same in every language, whatever its script: punctuation, and every other noun (the
# names and loanwords that web text in any script carries in Latin letters).
ANCHORS = ["?", "."] + NOUNS[::2]


@dataclass(frozen=True)
class Language:
    code: str
    varies: str          # what sets it apart from fake English, for the README's table
    script: str          # which alphabet its words are spelled in
    order: str           # SVO | SOV | VSO (a tiny model fine-tuned on SVO English reads VSO as noise: unused)
    cognates: float      # share of content words spelled as in English
    order_share: float = 1.0  # share of sentences in `order`; the others are SVO (scrambling, as in Turkish)


LANGUAGES = {
    lang.code: lang
    for lang in (
        Language("en", "the source language", "latin", "SVO", 1.0),
        Language("fr", "fake English: English grammar, its own words", "latin", "SVO", 0.0),
        Language("es", "cognates: 60% of content words shared with English", "latin", "SVO", 0.6),
        Language("de", "cognates: 30%", "latin", "SVO", 0.3),
        Language("vi", "cognates: 15%", "latin", "SVO", 0.15),
        Language("tr", "word order: SOV in half of its sentences", "latin", "SOV", 0.0, 0.5),
        Language("sw", "word order: SOV in half of its sentences", "latin", "SOV", 0.0, 0.5),
        Language("bg", "script: Cyrillic", "cyrillic", "SVO", 0.0),
        Language("ru", "script: Cyrillic", "cyrillic", "SVO", 0.0),
        Language("el", "script: Greek", "greek", "SVO", 0.0),
        Language("zh", "script: Han (a word is one or two characters)", "han", "SVO", 0.0),
        Language("th", "script: Thai", "thai", "SVO", 0.0),
        Language("hi", "script: Devanagari, and SOV in half of its sentences", "devanagari", "SOV", 0.0, 0.5),
        Language("ur", "script: Arabic, and SOV in half of its sentences", "arabic", "SOV", 0.0, 0.5),
        Language("ar", "script: Arabic, and SOV in half of its sentences", "arabic", "SOV", 0.0, 0.5),
    )
}
# How close each language is to English by design, highest first (tests and the README use it).
SIMILARITY_GROUPS = {"closest (fake English, cognates)": ("fr", "es", "de", "vi"),
                     "one factor (script or order)": ("bg", "ru", "el", "zh", "th", "tr", "sw"),
                     "two factors (script and order)": ("hi", "ur", "ar")}

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
    return list(dict.fromkeys(words + FUNCTION_WORDS + ANCHORS))


def content_words() -> list[str]:
    return [w for w in english_words() if w not in FUNCTION_WORDS + ANCHORS]


@lru_cache(maxsize=None)
def lexicon(code: str) -> dict[str, str]:
    """English word -> word in language `code`; fixed for all seeds (a language does not change).
    Function words are never cognates; punctuation is the same everywhere."""
    lang = LANGUAGES[code]
    if code == "en":
        return {word: word for word in english_words()}
    rng = random.Random(f"lexicon-{WORLD}-{code}")
    out: dict[str, str] = {}
    used = set(english_words())  # a made-up word never collides with a real one
    for word in english_words():
        if word in ANCHORS:
            out[word] = word
            continue
        if word not in FUNCTION_WORDS and rng.random() < lang.cognates:
            out[word] = word
            continue
        while True:
            candidate = _spell(rng, lang.script, rng.choice((2, 2, 3)))
            if candidate not in used:
                break
        used.add(candidate)
        out[word] = candidate
    return out


def _zipf(items: list[str], exponent: float = 1.0) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(len(items))]


_WEIGHTS = {"animate": _zipf(ANIMATE), "things": _zipf(THINGS), "nouns": _zipf(NOUNS),
            "adjectives": _zipf(ADJECTIVES), "verbs": _zipf(VERBS, 0.7)}


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
    """A being does something to a being or a thing; words drawn with Zipfian frequencies."""
    verb = rng.choices(VERBS, _WEIGHTS["verbs"])[0]
    subject = rng.choices(ANIMATE, _WEIGHTS["animate"])[0]
    pool = VERB_OBJECTS[verb]
    weights = _WEIGHTS["animate"] if pool is ANIMATE else _WEIGHTS["things"] if pool is THINGS else _WEIGHTS["nouns"]
    obj = subject
    while obj == subject:
        obj = rng.choices(pool, weights)[0]
    adjective = lambda: rng.choices(ADJECTIVES, _WEIGHTS["adjectives"])[0] if rng.random() < modifiers else None  # noqa: E731
    subject_adj, object_adj = adjective(), adjective()
    place = (rng.choice(PLACES), rng.choices(THINGS, _WEIGHTS["things"])[0]) if rng.random() < modifiers else None
    return Clause(subject=subject, subject_adj=subject_adj, verb=verb, object=obj, object_adj=object_adj,
                  place=place)


def _noun_phrase(noun: str, adj: str | None) -> list[str]:
    words = [noun] if adj is None else [adj, noun]
    return ["the", *words]


def render(clause: Clause, code: str, rng: random.Random | None = None, code_switch: float = 0.0) -> str:
    lang = LANGUAGES[code]
    subject = _noun_phrase(clause.subject, clause.subject_adj)
    obj = _noun_phrase(clause.object, clause.object_adj)
    verb = ["not", clause.verb] if clause.negated else [clause.verb]
    order = lang.order if lang.order_share >= 1 or random.Random(f"order-{code}-{clause}").random() < \
        lang.order_share else "SVO"
    core = {"SVO": subject + verb + obj, "SOV": subject + obj + verb, "VSO": verb + subject + obj}[order]
    if clause.place:
        core += [clause.place[0], "the", clause.place[1]]
    words = lexicon(code)
    rendered = [
        word if (rng is not None and rng.random() < code_switch) else words[word]
        for word in core
    ]
    return " ".join(rendered)


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
            text = text + " " + render(random_clause(rng, 0.3), code)
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
                           rng.choice([x for x in NOUNS if x not in (clause.object, clause.subject)]),
                           clause.object_adj)
        out.append({"question1": _question(clause, False, rng),
                    "question2": _question(other, rng.random() < 0.5, rng), "label": label})
    return out


def corpus_clause(rng: random.Random) -> Clause:
    """A clause of the pretraining stream: sometimes negated, sometimes with the verb's antonym or a
    synonym, so that every word the tasks' labels rest on is seen in context."""
    clause = random_clause(rng)
    roll = rng.random()
    if roll < 0.15:
        clause = replace(clause, negated=True)
    elif roll < 0.35:
        clause = replace(clause, verb=ANTONYMS[clause.verb])
    if rng.random() < 0.2:
        clause = replace(clause, subject_adj=SYNONYMS.get(clause.subject_adj, clause.subject_adj),
                         verb=SYNONYMS.get(clause.verb, clause.verb),
                         object_adj=SYNONYMS.get(clause.object_adj, clause.object_adj))
    return clause


def mlm_corpus(seed: int, sentences_per_language: int, languages=XNLI_LANGUAGES,
               translation_share: float = 0.8) -> list[str]:
    """The pretraining text: one clause stream rendered into every language (each line a sentence in
    one language), and `translation_share` of the non-English lines paired with their English original
    on one line, `english </s> translation` or the other way round."""
    rng = random.Random(f"corpus-{WORLD}-{seed}")
    lines = []
    for code in languages:
        for _ in range(sentences_per_language):
            clause = corpus_clause(rng)
            line = render(clause, code) + " ."
            if code != "en" and rng.random() < translation_share:
                english = render(clause, "en") + " ."
                line = f"{english} </s> {line}" if rng.random() < 0.5 else f"{line} </s> {english}"
            lines.append(line)
    rng.shuffle(lines)
    return lines


def word_pairs(code: str) -> list[tuple[str, str]]:
    """(English word, its translation) for the content words that are not cognates: what an
    alignment score should retrieve."""
    words = lexicon(code)
    return [(w, words[w]) for w in content_words() if words[w] != w]
