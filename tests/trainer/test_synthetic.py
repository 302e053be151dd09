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


def test_languages_differ_in_script_order_and_spacing():
    assert synthetic.lexicon("en")["cat"] == "cat"
    assert all("\u0400" <= ch <= "\u04ff" for ch in synthetic.lexicon("ru")["cat"])
    assert " " not in synthetic.render(synthetic.random_clause(__import__("random").Random(1)), "zh")
    clause = synthetic.Clause("cat", None, "sees", "dog", None)
    de = synthetic.render(clause, "de").split()
    assert de[-1] == synthetic.lexicon("de")["sees"], "German is verb-final here (SOV)"


def test_labels_balanced_and_consistent_with_the_rules():
    examples = synthetic.nli_examples(1, 3000)
    counts = Counter(e["label"] for e in examples)
    assert all(900 < counts[k] < 1100 for k in range(3))
    for e in examples[:300]:
        if e["label"] == 2:
            words = set(e["hypothesis"].split())
            assert "not" in words or words & set(synthetic.ANTONYMS.values())
