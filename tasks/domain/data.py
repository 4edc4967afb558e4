"""The CS224N minBERT data: read the tab-separated files, batch them, and bucket them by length.

Every file goes through one reader (`_read`): a `csv.DictReader` over tab-separated columns looked up by
name, so quoted fields holding tabs or quotes parse, and so does the odd header of the SST/CFIMDB test
files. Each dataset is then a few lines: which columns hold the text, how to parse and range-check the
label. Rows that cannot be used (empty or bad label, empty sentence, missing id, an id already seen: the
predictions are keyed by id) are skipped and reported in one notice per file with their line numbers (a
warning of the `tasks.domain.data` logger), so nothing is silently mislabelled or silently lost. An unlabelled (test)
row with an empty sentence is kept, with its own notice: a submission needs a prediction for every id. What
cannot be skipped row by row is an error naming the file and the line: a byte that is not UTF-8, or an
unbalanced quote that swallows the rows after it.
"""
from __future__ import annotations

import csv
import logging
import math
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

PathLike = Union[str, Path]
log = logging.getLogger(__name__)


@dataclass
class SentenceExample:
    id: str
    sentence: str
    label: Optional[int] = None  # None in the test-student files


@dataclass
class PairExample:
    id: str
    sentence1: str
    sentence2: str
    label: Optional[float] = None  # 0/1 for paraphrase, 0.0-5.0 for similarity; None when unlabelled


# ----------------------------------------------------------------------------- reading

def _read(path: PathLike, text_cols: Sequence[str], label_col: str, parse_label: Callable[[str], object],
          labeled: Optional[bool], make: Callable) -> list:
    """Read one file into examples: `make(id, *texts, label)` per good row, bad rows skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist (run `python -m tasks.fetch_data` to get the CS224N files)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _read_rows(path, f, text_cols, label_col, parse_label, labeled, make)
    except UnicodeDecodeError:  # the decoder knows neither the file nor the line: find them
        raise ValueError(_not_utf8(path)) from None


def _read_rows(path: Path, f, text_cols, label_col, parse_label, labeled, make) -> list:
    """The rows of an open file, as `_read` describes."""
    examples, bad, blank, first_line = [], [], [], {}  # bad/blank: (line number, why); first_line: id -> its line
    reader = csv.DictReader(f, delimiter="\t")
    header = reader.fieldnames or []
    labeled = label_col in header if labeled is None else labeled
    required = ["id", *text_cols] + ([label_col] if labeled else [])
    if not set(required) <= set(header):
        raise ValueError(f"{path}: expected tab-separated columns {required} (plus a leading row number), "
                         f"found header {header}")
    line = reader.line_num
    try:
        for row in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span several physical lines
            if line > start and _swallowed(row, len(header)):
                raise ValueError(f"{path}, line {start}: a quoted field opening on this line runs on to line {line}, "
                                 f"so lines {start + 1}-{line} were read as part of it, not as rows "
                                 "(an unbalanced quote?); fix or remove the quote")
            values = [(row.get(c) or "").strip() for c in ["id", *text_cols]]
            empty = [c for c, v in zip(["id", *text_cols], values) if not v]
            try:
                if empty and (labeled or "id" in empty):  # training rows must say something; any row needs its id
                    raise ValueError(f"empty {', '.join(empty)}")
                if values[0] in first_line:  # predictions are keyed by id: a second row would collide
                    raise ValueError(f"duplicate id {values[0]!r} (first on line {first_line[values[0]]})")
                label = parse_label((row.get(label_col) or "").strip()) if labeled else None
            except ValueError as err:
                bad.append((start, str(err)))
                continue
            if empty:  # an unlabelled (test) row must still be predicted: its text is [CLS] [SEP] alone
                blank.append((start, f"empty {', '.join(empty)}"))
            first_line[values[0]] = start
            examples.append(make(*values, label))
    except csv.Error as err:  # e.g. an unclosed quote swallowing the rest of the file into one huge field
        raise ValueError(f"{path}, line {line + 1}: unreadable CSV ({err}); check for an unbalanced quote") from err
    if bad:
        shown = "; ".join(f"line {n}: {why}" for n, why in bad[:5])
        log.warning(f"{path}: skipped {len(bad)} malformed row(s) of {len(bad) + len(examples)} ({shown}"
                    f"{'; ...' if len(bad) > 5 else ''})")
    if blank:
        shown = "; ".join(f"line {n}: {why}" for n, why in blank[:5])
        log.warning(f"{path}: kept {len(blank)} unlabelled row(s) with an empty sentence, predicted from [CLS] [SEP] "
                    f"alone so that every id has a prediction ({shown}{'; ...' if len(blank) > 5 else ''})")
    return examples


def _swallowed(row: dict, columns: int) -> bool:
    """A quoted sentence may span lines; but a line inside a field that holds a row's worth of tabs means an
    unbalanced quote swallowed the rows after it."""
    texts = [t for v in row.values() for t in (v if isinstance(v, list) else [v]) if isinstance(t, str)]
    return any(part.count("\t") >= max(1, columns - 2) for t in texts for part in t.split("\n")[1:])


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: line (physical, as in the other messages), column, value."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return (f"{path}, line {number}, column {err.start + 1}: byte 0x{raw[err.start]:02x} is not UTF-8; "
                    "the data files must be UTF-8 (convert it, e.g. `iconv -f latin1 -t utf-8`)")
    return f"{path}: not valid UTF-8"


def _number(text: str, low: float, high: float, integer: bool) -> Union[int, float]:
    """Parse a label and check its range; ValueError (a skipped row) otherwise."""
    if not text:
        raise ValueError("empty label")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"label {text!r} is not a number") from None
    if not low <= value <= high or (integer and not value.is_integer()):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"label {text!r} is not {kind} in [{low:g}, {high:g}]")
    return int(value) if integer else value


def load_sentiment(path: PathLike, labeled: Optional[bool] = None, num_classes: int = 5) -> List[SentenceExample]:
    """SST (labels 0-4) or CFIMDB (0-1, num_classes=2): columns id, sentence, sentiment."""
    return _read(path, ["sentence"], "sentiment", partial(_number, low=0, high=num_classes - 1, integer=True),
                 labeled, SentenceExample)


def load_paraphrase(path: PathLike, labeled: Optional[bool] = None) -> List[PairExample]:
    """Quora question pairs: columns id, sentence1, sentence2, is_duplicate ('0.0'/'1.0' -> 0/1)."""
    return _read(path, ["sentence1", "sentence2"], "is_duplicate", partial(_number, low=0, high=1, integer=True),
                 labeled, PairExample)


def load_similarity(path: PathLike, labeled: Optional[bool] = None) -> List[PairExample]:
    """STS benchmark: columns id, sentence1, sentence2, similarity (a float in 0-5)."""
    return _read(path, ["sentence1", "sentence2"], "similarity", partial(_number, low=0, high=5, integer=False),
                 labeled, PairExample)


# ----------------------------------------------------------------------------- registry

SPLITS = ("train", "dev", "test-student")


@dataclass(frozen=True)
class Task:
    """One downstream task: where its files are and how to read and score it."""
    name: str
    prefix: str                  # files are f"{prefix}-{split}.csv"
    loader: Callable[..., list]
    num_classes: Optional[int]   # None: regression
    metric: str
    pair: bool

    def filename(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return f"{self.prefix}-{split}.csv"

    def load(self, split: str, data_dir: PathLike = "data") -> list:
        return self.loader(Path(data_dir) / self.filename(split))


TASKS: Dict[str, Task] = {
    "sst": Task("sst", "ids-sst", load_sentiment, 5, "accuracy", pair=False),
    "cfimdb": Task("cfimdb", "ids-cfimdb", partial(load_sentiment, num_classes=2), 2, "accuracy", pair=False),
    "para": Task("para", "quora", load_paraphrase, 2, "accuracy", pair=True),
    "sts": Task("sts", "sts", load_similarity, None, "pearson", pair=True),
}
ALL_FILES = [task.filename(split) for task in TASKS.values() for split in SPLITS]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


# ----------------------------------------------------------------------------- batching

def _labels(examples: Sequence, dtype: torch.dtype) -> Optional[torch.Tensor]:
    labels = [e.label for e in examples]
    if all(x is None for x in labels):
        return None
    if any(x is None for x in labels):
        raise ValueError("a batch mixes labelled and unlabelled examples")
    return torch.tensor(labels, dtype=dtype)


class SentenceCollator:
    """collate_fn for SentenceExamples: input_ids, token_type_ids, attention_mask (B, T), labels, ids."""

    def __init__(self, tokenizer, max_length: int = 128, label_dtype: torch.dtype = torch.long):
        self.tokenizer, self.max_length, self.label_dtype = tokenizer, max_length, label_dtype

    def __call__(self, examples: Sequence[SentenceExample]) -> dict:
        batch = dict(self.tokenizer([e.sentence for e in examples], max_length=self.max_length))
        labels = _labels(examples, self.label_dtype)
        if labels is not None:
            batch["labels"] = labels
        batch["ids"] = [e.id for e in examples]
        return batch


class PairCollator:
    """collate_fn for PairExamples, in either of the two ways a pair reaches BERT.

    mode="siamese": each sentence encoded alone (keys input_ids_1, token_type_ids_1, attention_mask_1 and
    the same with _2), for sentence embeddings compared afterwards (SBERT). mode="cross": one sequence
    `[CLS] a [SEP] b [SEP]` with token_type_ids 0/1, so attention sees both sentences at once.
    `max_length` bounds each sentence (siamese) or the joined pair, cut longest-first (cross).
    """

    def __init__(self, tokenizer, mode: str = "siamese", max_length: int = 128, label_dtype: torch.dtype = torch.float):
        if mode not in ("siamese", "cross"):
            raise ValueError(f"PairCollator mode must be 'siamese' or 'cross', got {mode!r}")
        self.tokenizer, self.mode, self.max_length, self.label_dtype = tokenizer, mode, max_length, label_dtype

    def __call__(self, examples: Sequence[PairExample]) -> dict:
        a, b = [e.sentence1 for e in examples], [e.sentence2 for e in examples]
        if self.mode == "cross":
            batch = dict(self.tokenizer(a, b, max_length=self.max_length))
        else:
            batch = {f"{k}_{i}": v for i, texts in ((1, a), (2, b))
                     for k, v in self.tokenizer(texts, max_length=self.max_length).items()}
        labels = _labels(examples, self.label_dtype)
        if labels is not None:
            batch["labels"] = labels
        batch["ids"] = [e.id for e in examples]
        return batch


def subsample(examples: Sequence, n: Optional[int], seed: int = 0) -> list:
    """A fixed random `n` of the examples, in file order (all of them when n is None or too large).

    For quick runs (`--max_examples`). Not the first n rows: the files are not shuffled (the first 2,000 rows
    of SST train are 79% positive), so a prefix would train on a skewed label distribution.
    """
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    if n < 0:
        raise ValueError(f"max_examples must be >= 0, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def hold_out(examples: Sequence, fraction: float, seed: int = 1) -> Tuple[list, list]:
    """(the rest, a fixed random `fraction` of the examples), both in file order: rows to choose the epoch (or
    the learning rate) on, so that dev is only ever used to report. The same rows whatever the run's seed."""
    examples = list(examples)
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    held = set(random.Random(seed).sample(range(len(examples)), max(1, round(fraction * len(examples)))))
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def example_lengths(examples: Sequence, tokenizer, max_length: int = 128) -> List[int]:
    """Token count of each example as the cross/sentence collator would see it (pairs joined)."""
    if examples and isinstance(examples[0], PairExample):
        enc = tokenizer([e.sentence1 for e in examples], [e.sentence2 for e in examples],
                        max_length=max_length, padding=False, return_tensors=None)
    else:
        enc = tokenizer([e.sentence for e in examples], max_length=max_length, padding=False, return_tensors=None)
    return [len(ids) for ids in enc["input_ids"]]


class LengthBucketSampler(torch.utils.data.Sampler):
    """Batch sampler that puts examples of similar length together, to cut padding.

    Each epoch: shuffle all indices, cut them into chunks of batch_size * bucket_size_multiplier, sort each
    chunk by length, cut the chunk into batches, shuffle the batch order. Batches stay random (a chunk is a
    random sample) yet each holds near-equal lengths. The order depends only on (seed, epoch): call
    `set_epoch(e)` before each epoch. Use as `DataLoader(ds, batch_sampler=sampler, collate_fn=...)`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_size_multiplier: int = 50, drop_last: bool = False):
        if batch_size < 1 or bucket_size_multiplier < 1:
            raise ValueError(f"batch_size and bucket_size_multiplier must be >= 1, got {batch_size}, {bucket_size_multiplier}")
        self.lengths, self.batch_size, self.shuffle, self.seed = list(lengths), batch_size, shuffle, seed
        self.bucket_size_multiplier, self.drop_last, self.epoch = bucket_size_multiplier, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        chunk = self.batch_size * self.bucket_size_multiplier
        batches = []
        for start in range(0, len(order), chunk):
            bucket = sorted(order[start:start + chunk], key=self.lengths.__getitem__)  # stable: ties keep order
            batches += [bucket[i:i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()  # chunks are whole batches, so only the very last batch can be short
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of token slots that are padding when each batch is padded to its longest member."""
    padded = real = 0
    for batch in batches:
        lens = [lengths[i] for i in batch]
        padded += max(lens) * len(lens)
        real += sum(lens)
    return 1 - real / padded if padded else 0.0


def random_batches(n: int, batch_size: int, seed: int = 0) -> List[List[int]]:
    """Plain shuffled batches, the baseline that `LengthBucketSampler` is measured against."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
