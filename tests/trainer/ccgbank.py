"""Write records as a CCGbank release lays them out (data/AUTO/<section>/wsj_*.auto), for tests."""

from pathlib import Path

from stilts_trainer.tasks.ccg import SECTIONS


def derivation(record: dict) -> str:
    """A (flat) machine-readable derivation: the reader needs only the leaves, as CCGbank writes them."""
    leaves = " ".join(f"(<L {tag} NN NN {word} {tag}>)" for word, tag in zip(record["tokens"], record["tags"]))
    return f"(<T S[dcl] 0 2> {leaves} )"


def write_ccgbank(root: Path, splits: dict[str, list[dict]]) -> Path:
    """`root`/ccgbank, with each split's records in the first of its sections."""
    for split, records in splits.items():
        section = SECTIONS[split][0]
        directory = root / "ccgbank" / "data" / "AUTO" / section
        directory.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, record in enumerate(records):
            lines += [f"ID=wsj_{section}01.{i + 1} PARSER=GOLD NUMPARSE=1", derivation(record)]
        (directory / f"wsj_{section}01.auto").write_text("\n".join(lines) + "\n")
    return root
