from collections import Counter

from stilts_trainer import synthetic, tasks


def test_same_seed_same_data_and_different_seed_different_data():
    assert synthetic.nli_examples(3, 50) == synthetic.nli_examples(3, 50)
    assert synthetic.nli_examples(3, 50) != synthetic.nli_examples(4, 50)
    assert synthetic.mlm_corpus(0, 20) == synthetic.mlm_corpus(0, 20)


def test_xnli_is_one_set_rendered_into_fifteen_languages():
    per_lang = {lang: tasks.get("xnli").synthetic("test", 0, lang) for lang in synthetic.XNLI_LANGUAGES}
    labels = {lang: [e["label"] for e in ex] for lang, ex in per_lang.items()}
    assert len({tuple(v) for v in labels.values()}) == 1, "labels must be identical across languages"
    english = per_lang["en"][0]["premise"]
    assert all(per_lang[lang][0]["premise"] != english for lang in synthetic.XNLI_LANGUAGES if lang != "en")


def test_languages_vary_one_factor_at_a_time():
    assert synthetic.lexicon("en")["dog"] == "dog"
    assert all("\u0400" <= ch <= "\u04ff" for ch in synthetic.lexicon("ru")["dog"]), "script"
    assert synthetic.lexicon("ru")["cat"] == "cat", "anchors (every other noun) are spelled alike everywhere"
    assert synthetic.lexicon("fr")["dog"] != "dog" and synthetic.LANGUAGES["fr"].order == "SVO", "fake English"
    cognates = sum(synthetic.lexicon("es")[w] == w for w in synthetic.content_words()) / len(synthetic.content_words())
    assert 0.4 < cognates < 0.8, "es shares 60% of the content words that are not already anchors"
    import random
    rng = random.Random(1)
    clauses = [synthetic.random_clause(rng) for _ in range(400)]
    verb_final = [synthetic.render(c, "tr").split()[-1] == synthetic.lexicon("tr")[c.verb] for c in clauses
                  if not c.place]
    assert 0.35 < sum(verb_final) / len(verb_final) < 0.65, "tr: SOV in half of its sentences"
    assert all(synthetic.render(c, "fr").split()[2 if c.subject_adj else 1] ==
               synthetic.lexicon("fr")[c.subject] for c in clauses)


def test_the_corpus_pairs_translations_and_holds_every_label_word():
    from stilts_trainer.phases import SYNTHETIC_CORPUS_PER_LANGUAGE
    corpus = synthetic.mlm_corpus(0, SYNTHETIC_CORPUS_PER_LANGUAGE)
    pairs = [line for line in corpus if " </s> " in line]
    non_english = len(corpus) * 14 / 15
    assert 0.7 < len(pairs) / non_english < 0.9, "80% of non-English lines carry their English original"
    words = set(" ".join(corpus).split())
    for code in ("en", "tr", "zh"):
        lexicon = synthetic.lexicon(code)
        for word in ["not", *synthetic.ANTONYMS.values(), *synthetic.SYNONYMS.values()]:
            assert lexicon[word] in words, (code, word)


def test_labels_balanced_and_consistent_with_the_rules():
    examples = synthetic.nli_examples(1, 3000)
    counts = Counter(e["label"] for e in examples)
    assert all(900 < counts[k] < 1100 for k in range(3))
    for e in examples[:300]:
        if e["label"] == 2:
            words = set(e["hypothesis"].split())
            assert "not" in words or words & set(synthetic.ANTONYMS.values())
