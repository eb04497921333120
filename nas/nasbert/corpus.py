"""Unlabelled text for task-agnostic distillation: read, tokenize, cut into fixed-length sequences.

Sources: plain text files (one document or sentence per line; blank lines are skipped; WikiText's ``<unk>`` is
read as the tokenizer's unknown token), ``demo`` (the sentences of the bundled BBC News sample), or, for online
users, a ``datasets`` name ``NAME`` or ``NAME:CONFIG`` whose ``train`` split has a ``text`` column (e.g.
``wikitext:wikitext-103-raw-v1``). Lines are tokenized without special tokens, concatenated in order, and cut
into sequences of ``seq_len - 2`` tokens, each wrapped in ``[CLS] ... [SEP]`` (no padding: every mask is all ones).
The last ``heldout`` sequences (a contiguous tail, so no sentence straddles the split) are held out for scoring
paths and for selection.

>>> from transformers import AutoTokenizer                                 # doctest: +SKIP
>>> c = load_corpus(["demo"], AutoTokenizer.from_pretrained(default_base()), seq_len=64)  # doctest: +SKIP
>>> c.ids.shape                                                            # doctest: +SKIP
torch.Size([1254, 64])
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.data import DataError


@dataclass
class Corpus:
    """Token sequences of one length, in corpus order."""

    ids: torch.Tensor  # (N, T) int64 token ids, [CLS] ... [SEP]
    sources: list[str]  # what was read, for reports
    lines: int  # non-blank lines read

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """First 16 hex digits of a sha256 of the token ids (the cache key of the teacher's targets)."""
        return hashlib.sha256(self.ids.numpy().tobytes()).hexdigest()[:16]

    def split(self, heldout: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(train ids (N - heldout, T), held-out ids (heldout, T))``."""
        return self.ids[: len(self.ids) - heldout], self.ids[len(self.ids) - heldout:]


def _demo_lines() -> list[str]:
    from importlib.resources import files

    folder = files("nas.sample_data") / "bbc_sample"
    out = []
    for name in ("train.tsv", "dev.tsv"):
        rows = (folder / name).read_text(encoding="utf-8").splitlines()[1:]
        out += [r.rsplit("\t", 1)[0] for r in rows if r.strip()]
    return out


def _file_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"--corpus {path}: no such file; give text files (one document or sentence per line), "
                        "'demo', or a datasets name such as wikitext:wikitext-2-raw-v1")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"--corpus {path}: not UTF-8 text (byte {e.start}); convert it to UTF-8 plain text") from None
    return [line for line in text.splitlines() if line.strip()]


def _hub_lines(name: str) -> list[str]:
    import datasets

    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types; one line for all of them
        raise DataError(f"--corpus {name}: cannot load it with datasets ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}); give local text files, or a hub name while online") from None
    if "text" not in ds.column_names:
        raise DataError(f"--corpus {name}: its train split has no 'text' column (columns: {ds.column_names})")
    return [t for t in ds["text"] if t and t.strip()]


def read_lines(source: str) -> list[str]:
    """The non-blank lines of one corpus source (a file, ``demo``, or a ``datasets`` name)."""
    if source == "demo":
        return _demo_lines()
    p = Path(source).expanduser()
    if p.exists() or source.startswith((".", "/", "~")) or p.suffix in (".txt", ".raw", ".tokens"):
        return _file_lines(p)
    return _hub_lines(source)


def load_corpus(sources: list[str], tokenizer, seq_len: int = 128) -> Corpus:
    """Read every source, tokenize and cut into ``(N, seq_len)`` sequences (see the module docstring)."""
    if not sources:
        raise DataError("--corpus: give at least one text file, 'demo', or a datasets name")
    if seq_len < 8:
        raise DataError(f"--seq-len {seq_len}: too short; use at least 8 tokens")
    lines: list[str] = []
    for s in sources:
        lines += read_lines(s)
    unk = tokenizer.unk_token or "[UNK]"
    lines = [ln.replace("<unk>", unk).strip() for ln in lines]
    stream: list[int] = []
    for k in range(0, len(lines), 2048):
        for ids in tokenizer(lines[k:k + 2048], add_special_tokens=False)["input_ids"]:
            stream += ids
    body = seq_len - 2
    n = len(stream) // body
    if n == 0:
        raise DataError(f"--corpus {', '.join(sources)}: only {len(stream)} tokens, not one sequence of {seq_len}; "
                        "give more text")
    x = torch.tensor(stream[: n * body], dtype=torch.int64).view(n, body)  # (N, T - 2)
    cls = torch.full((n, 1), tokenizer.cls_token_id, dtype=torch.int64)
    sep = torch.full((n, 1), tokenizer.sep_token_id, dtype=torch.int64)
    return Corpus(torch.cat([cls, x, sep], 1), list(sources), len(lines))


def check_size(corpus: Corpus, heldout: int, batch_size: int, steps: int, max_repeats: float) -> None:
    """Refuse a corpus too small for the requested training (one line saying how many sequences it holds)."""
    train = len(corpus) - heldout
    need = steps * batch_size
    if train < batch_size or need > max_repeats * max(train, 1):
        raise DataError(
            f"--corpus {', '.join(corpus.sources)}: holds {len(corpus)} sequences of {corpus.ids.shape[1]} tokens "
            f"({heldout} held out, {max(train, 0)} for training); {steps} steps per block x batch {batch_size} would "
            f"read each training sequence {need / max(train, 1):.0f} times (at most {max_repeats:g}); give more "
            "text, or fewer steps / a smaller batch")


__all__ = ["Corpus", "load_corpus", "read_lines", "check_size"]
