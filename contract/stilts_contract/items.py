"""Which test items an evaluate job got right, as it travels from a pod to the operator.

The report's intervals pair arms item by item (stats.py): without each run's per-item results, a cluster
report has to bound the test set's noise by the binomial, several times too cautious. A termination
message holds 4096 bytes and one run's items are about 9 KB (5,010 bits per XNLI language), so the
evaluate job prints them as the last lines of its log, and its summary (the termination message)
carries their digest: the operator reads the leader's log once the job succeeded, keeps the lines only
if they match the digest, and stores them in ConfigMaps (operator/stilts/manifests.items_store).

Line format: `stilts-items <job hash> <language> <items> <base64 of the bits, packed, big-endian>`.
"""

from __future__ import annotations

import base64
import hashlib

PREFIX = "stilts-items"


def pack(bits: str) -> str:
    """'0110...' -> base64 of the packed bits."""
    padded = bits + "0" * (-len(bits) % 8)
    return base64.b64encode(int(padded or "0", 2).to_bytes(len(padded) // 8, "big")).decode()


def unpack(packed: str, items: int) -> str:
    """base64 of packed bits -> '0110...' of `items` characters."""
    raw = base64.b64decode(packed)
    if len(raw) * 8 < items or len(raw) * 8 >= items + 8:
        raise ValueError(f"{len(raw) * 8} bits where {items} were announced")
    return format(int.from_bytes(raw, "big"), f"0{len(raw) * 8}b")[:items]


def encode(correct: dict[str, str]) -> dict[str, list]:
    """{language: '0110...'} -> {language: [items, packed]}: what the ConfigMap keeps."""
    return {lang: [len(bits), pack(bits)] for lang, bits in sorted(correct.items())}


def decode(stored: dict[str, list]) -> dict[str, str]:
    return {lang: unpack(packed, items) for lang, (items, packed) in stored.items()}


def digest(stored: dict[str, list]) -> str:
    text = "".join(f"{lang}:{items}:{packed}\n" for lang, (items, packed) in sorted(stored.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lines(job_hash: str, correct: dict[str, str]) -> list[str]:
    """The log lines an evaluate job prints."""
    return [f"{PREFIX} {job_hash} {lang} {items} {packed}" for lang, (items, packed) in encode(correct).items()]


def parse(log: str, job_hash: str, expected_digest: str) -> dict[str, list] | None:
    """The items a job printed, from its log, if they are whole and match the digest of its summary."""
    found = {}
    for line in log.splitlines():
        at = line.find(PREFIX)  # after any prefix a launcher puts before a worker's lines
        parts = line[at:].split() if at >= 0 else []
        if len(parts) == 5 and parts[0] == PREFIX and parts[1] == job_hash and parts[3].isdigit():
            found[parts[2]] = [int(parts[3]), parts[4]]
    return found if found and digest(found) == expected_digest else None
