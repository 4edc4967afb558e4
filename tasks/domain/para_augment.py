"""Quora's structure as extra training pairs (--para_augment), never touching a dev or test question.

"Is a duplicate of" is symmetric and transitive, and the training file states each pair once:

- symmetric: every training pair (a, b) is also given as (b, a), with its label (a cross-encoder's input
  `[CLS] a [SEP] b [SEP]` is ordered, so (b, a) is a new input);
- transitive: the duplicate pairs (label 1) are the edges of a graph over questions; within a connected
  component every two questions are duplicates (A≈B, B≈C ⇒ A≈C). Each component adds its pairs that the
  file does not already hold (in either order, with either label: a pair labelled 0 there wins), at most
  `cap` of them, a seeded random choice, so that one large cluster does not swamp the data.

Questions are compared after `normalize_question` (case, punctuation and spacing folded). No added pair holds
a question whose normalised text is in the dev or test file, and those questions are taken out of the graph
before its components are formed, so no added label is inferred through one either. Only duplicates are
inferred: (A≈B, B≉C ⇒ A≉C) would add negatives, and is not done.
"""
from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .data import PairExample, load_paraphrase

AUGMENTS = ("none", "symmetric", "transitive", "symmetric+transitive")
_NOT_WORD = re.compile(r"[\W_]+")


def normalize_question(text: str) -> str:
    """The text compared between files: casefolded, every run of non-alphanumerics one space, trimmed."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def held_out_questions(paths: Iterable[Optional[str]]) -> Set[str]:
    """The normalised questions of the given files (dev, test; labelled or not); None or a missing path is skipped."""
    found: Set[str] = set()
    for path in paths:
        if path and Path(path).is_file():
            for e in load_paraphrase(path):
                found.update((normalize_question(e.sentence1), normalize_question(e.sentence2)))
    return found


def duplicate_components(edges: Iterable[Tuple[str, str]]) -> List[List[str]]:
    """The connected components (two or more nodes, each sorted, the list sorted) of an undirected graph."""
    parent: Dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for x, y in edges:
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: Dict[str, List[str]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def transitive_pairs(components: Sequence[Sequence[str]], known: Set[frozenset], cap: int,
                     rng: random.Random) -> List[Tuple[str, str]]:
    """Per component, its pairs (x < y) not in `known`; at most `cap` of them (a random choice), in sorted order."""
    out: List[Tuple[str, str]] = []
    for nodes in components:
        new = [(x, y) for i, x in enumerate(nodes) for y in nodes[i + 1:] if frozenset((x, y)) not in known]
        if cap >= 0 and len(new) > cap:
            new = sorted(rng.sample(new, cap))
        out += new
    return out


def augment_pairs(train: Sequence[PairExample], held_out: Set[str], mode: str, cap: int = 20,
                  seed: int = 0) -> Tuple[List[PairExample], Dict[str, int]]:
    """The added examples (ids "sym:<id>", "tr:<n>", ...) and their counts; none has a `held_out` question."""
    if mode not in AUGMENTS:
        raise ValueError(f"para_augment must be one of {AUGMENTS}, got {mode!r}")
    key = {}  # normalised text -> the first original text seen
    for e in train:
        for s in (e.sentence1, e.sentence2):
            key.setdefault(normalize_question(s), s)
    norm = lambda s: normalize_question(s)  # noqa: E731
    clean = [e for e in train if norm(e.sentence1) not in held_out and norm(e.sentence2) not in held_out]
    added: List[PairExample] = []
    counts = {"symmetric": 0, "transitive": 0, "components": 0,
              "left_out_held_out": len(train) - len(clean)}
    if "symmetric" in mode:
        added += [dataclasses.replace(e, id=f"sym:{e.id}", sentence1=e.sentence2, sentence2=e.sentence1) for e in clean]
        counts["symmetric"] = len(clean)
    if "transitive" in mode:
        known = {frozenset((norm(e.sentence1), norm(e.sentence2))) for e in train}
        components = duplicate_components((norm(e.sentence1), norm(e.sentence2)) for e in clean
                                          if e.label == 1 and norm(e.sentence1) != norm(e.sentence2))
        rng = random.Random(seed)
        pairs = transitive_pairs(components, known, cap, rng)
        counts["components"] = sum(len(c) > 2 for c in components)
        for n, (x, y) in enumerate(pairs):
            a, b = (key[x], key[y]) if mode == "symmetric+transitive" or rng.random() < 0.5 else (key[y], key[x])
            added.append(PairExample(f"tr:{n}", a, b, 1))
            if mode == "symmetric+transitive":
                added.append(PairExample(f"sym:tr:{n}", b, a, 1))
        counts["transitive"] = len(added) - counts["symmetric"]
    return added, counts


def augment_processor(processor, files: Mapping[str, str], mode: str, cap: int = 20, seed: int = 0) -> str:
    """Add the pairs of `mode` to the paraphrase processor's training split, keeping out every question of
    files["dev"] and files["test"] (read whole, whatever --max_examples kept); returns the line to log."""
    held_out = held_out_questions([files.get("dev"), files.get("test")])
    added, counts = augment_pairs(processor.splits["train"], held_out, mode, cap, seed)
    before = len(processor.splits["train"])
    processor.splits["train"] = list(processor.splits["train"]) + added
    processor._lengths = None  # the length buckets are recomputed over the larger set
    return (f"para: --para_augment {mode} adds {len(added)} training pairs to {before} "
            f"({counts['symmetric']} reversed, {counts['transitive']} by transitivity from "
            f"{counts['components']} components of 3+ questions, at most {cap} each; "
            f"{counts['left_out_held_out']} pairs with a dev/test question neither reversed nor used)")
