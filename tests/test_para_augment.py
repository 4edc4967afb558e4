"""--para_augment: the reversed and transitive Quora pairs on a hand-built duplicate graph, and no added pair
ever holding a question of the dev or test file (compared after normalisation)."""
import random

import pytest

from tasks.domain.data import PairExample
from tasks.domain.para_augment import (augment_pairs, augment_processor, duplicate_components, held_out_questions,
                                normalize_question, transitive_pairs)
from tasks.domain.processors import ParaphraseProcessor


# duplicates: A-B, B-C, C-D (one group), E-F, F-X (X is a dev question), G-H, H-T (T is a test question);
# A-D is labelled "not a duplicate" in the file, and so is never added
TRAIN = [("What is A?", "what is b", 1), ("What is B", "What is C?", 1), ("what is c", "What is D", 1),
         ("What is E", "What is F", 1), ("What is F", "What is X", 1), ("What is G", "What is H", 1),
         ("What is H", "What is T", 1), ("What is A", "What is D", 0), ("What is E", "What is Z", 0)]
DEV = [("WHAT IS X ?", "something else", 0)]
TEST = [("other question", "what   is t", None)]


def _write(path, rows, labelled=True):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\tid\tsentence1\tsentence2" + ("\tis_duplicate" if labelled else "") + "\n")
        for i, (a, b, y) in enumerate(rows):
            f.write("\t".join([str(i), f"{path.stem}-{i}", a, b] + ([f"{float(y)}"] if labelled else [])) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    return {"train": _write(tmp_path / "quora-train.csv", TRAIN), "dev": _write(tmp_path / "quora-dev.csv", DEV),
            "test": _write(tmp_path / "quora-test-student.csv", TEST, labelled=False)}


def _examples():
    return [PairExample(f"t{i}", a, b, y) for i, (a, b, y) in enumerate(TRAIN)]


def _unordered(examples):
    return {frozenset((normalize_question(e.sentence1), normalize_question(e.sentence2))) for e in examples}


def test_normalisation_folds_case_punctuation_and_spacing():
    assert normalize_question("  What's   the BEST way?! ") == normalize_question("what s the best way")
    assert normalize_question("naïve café") == "naïve café"


def test_components_and_transitive_pairs_on_a_hand_built_graph():
    comps = duplicate_components([("a", "b"), ("b", "c"), ("c", "d"), ("e", "f"), ("x", "x")])
    assert comps == [["a", "b", "c", "d"], ["e", "f"]]  # a self-loop is no component
    known = {frozenset(p) for p in [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("e", "f")]}
    assert transitive_pairs(comps, known, cap=-1, rng=random.Random(0)) == [("a", "c"), ("b", "d")]
    capped = transitive_pairs(comps, known, cap=1, rng=random.Random(0))
    assert len(capped) == 1 and capped[0] in [("a", "c"), ("b", "d")]


def test_transitive_pairs_skip_held_out_questions_and_labelled_pairs(files):
    held_out = held_out_questions([files["dev"], files["test"]])
    assert normalize_question("What is X") in held_out and normalize_question("what is t") in held_out
    added, counts = augment_pairs(_examples(), held_out, "transitive", cap=-1, seed=0)
    # A..D gives A-C and B-D (A-D is labelled 0); E-F's only link on is X (dev); G-H's is T (test): nothing
    assert _unordered(added) == {frozenset(("what is a", "what is c")), frozenset(("what is b", "what is d"))}
    assert all(e.label == 1 for e in added) and counts["transitive"] == 2 and counts["components"] == 1
    assert counts["left_out_held_out"] == 2


@pytest.mark.parametrize("mode", ["symmetric", "transitive", "symmetric+transitive"])
def test_no_augmented_pair_holds_a_dev_or_test_question(files, mode):
    proc = ParaphraseProcessor.from_files("para", tokenizer=None, train=files["train"])
    line = augment_processor(proc, {k: str(v) for k, v in files.items()}, mode, cap=-1, seed=0)
    original = len(TRAIN)
    added = proc.splits["train"][original:]
    held_out = held_out_questions([files["dev"], files["test"]])
    assert added and f"adds {len(added)} training pairs to {original}" in line
    for e in added:
        assert normalize_question(e.sentence1) not in held_out and normalize_question(e.sentence2) not in held_out
    assert len({e.id for e in proc.splits["train"]}) == len(proc.splits["train"])  # ids stay unique
    if "symmetric" in mode:  # every pair without a held-out question, reversed, with its label
        reversed_ = [e for e in added if e.id.startswith("sym:") and not e.id.startswith("sym:tr:")]
        assert len(reversed_) == original - 2
        assert {(e.sentence2, e.sentence1, e.label) for e in reversed_} <= {(a, b, y) for a, b, y in TRAIN}
    if mode == "symmetric+transitive":  # each transitive pair in both orders
        assert sum(e.id.startswith("tr:") for e in added) == sum(e.id.startswith("sym:tr:") for e in added) == 2


def test_augment_pairs_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="para_augment"):
        augment_pairs(_examples(), set(), "reflexive")
