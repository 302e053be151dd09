"""CCG supertagging from CCGbank (LDC2005T13), which is licensed: users copy the release onto the
volume and point `dataDir` at its parent. Read from its machine-readable derivations
(`data/AUTO/<section>/wsj_*.auto`), leaves `(<L category POS POS word pred-arg>)`, with the
standard split: sections 02-21 train, 00 dev, 23 test."""

import random
import re
from pathlib import Path

from .. import synthetic
from . import Task, register

SECTIONS = {"train": [f"{s:02d}" for s in range(2, 22)], "dev": ["00"], "test": ["23"]}
LEAF = re.compile(r"\(<L (\S+) (\S+) (\S+) (\S+) (\S+)>\)")
SIZES = {"train": 3000, "dev": 400, "test": 400}


def read_auto(split: str, root: str) -> list[dict]:
    auto = Path(root) / "data" / "AUTO"
    if not auto.is_dir():
        raise FileNotFoundError(f"{auto} does not exist: dataDir must hold the CCGbank release as "
                                "ccgbank/data/AUTO/<section>/wsj_*.auto")
    records = []
    for section in SECTIONS[split]:
        for path in sorted((auto / section).glob("*.auto")):
            for line in path.read_text().splitlines():
                if line.startswith("ID=") or not line.strip():
                    continue
                leaves = LEAF.findall(line)
                if not leaves:
                    from ..data import DataError  # data imports the task registry, so not at the top
                    raise DataError(f"{path}: a derivation line without (<L ...>) leaves: {line[:80]!r}")
                records.append({"tokens": [leaf[3] for leaf in leaves], "tags": [leaf[0] for leaf in leaves]})
    if not records:
        raise FileNotFoundError(f"no derivations for the {split} split in {auto} (sections {SECTIONS[split]})")
    return records


def sentence(clause: synthetic.Clause) -> dict:
    """An English clause with CCGbank-style categories; a verb's category depends on its context
    (bare after "does not", finite otherwise), as real supertags do."""
    words: list[tuple[str, str]] = [("the", "NP[nb]/N")]
    if clause.subject_adj:
        words.append((clause.subject_adj, "N/N"))
    words.append((clause.subject, "N"))
    if clause.negated:
        words += [("does", "(S[dcl]\\NP)/(S[b]\\NP)"), ("not", "(S\\NP)\\(S\\NP)"),
                  (clause.verb[:-1] if clause.verb.endswith("s") else clause.verb, "(S[b]\\NP)/NP")]
    else:
        words.append((clause.verb, "(S[dcl]\\NP)/NP"))
    words.append(("the", "NP[nb]/N"))
    if clause.object_adj:
        words.append((clause.object_adj, "N/N"))
    words.append((clause.object, "N"))
    if clause.place:
        words += [(clause.place[0], "((S\\NP)\\(S\\NP))/NP"), ("the", "NP[nb]/N"), (clause.place[1], "N")]
    words.append((".", "."))
    return {"tokens": [w for w, _ in words], "tags": [t for _, t in words]}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    rng = random.Random(f"ccg-{seed}-{split}")
    out = []
    for _ in range(SIZES[split]):
        c = synthetic.random_clause(rng)
        if rng.random() < 0.3:
            c = synthetic.Clause(c.subject, c.subject_adj, c.verb, c.object, c.object_adj, True, c.place)
        out.append(sentence(c))
    return out


def convert(record: dict) -> dict:
    return {"tokens": list(record["tokens"]), "tags": list(record["tags"])}


ccg = register(Task(
    name="ccg",
    description="CCG supertagging (CCGbank): one category per word",
    metric="tag accuracy",
    fields=("tokens", "tags"),
    convert=convert,
    read_local=read_auto,
    synthetic=make_synthetic,
    notes="the tag set is built from the training split",
))
