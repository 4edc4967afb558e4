"""tasks.domain.data and tasks.fetch_data: loaders on hand-made bad files and on the real CS224N files, collators,
the length-bucketed sampler, and the data fetcher."""
from pathlib import Path

import pytest
import torch

from _datafiles import data_file
from minibert.tokenizer import Tokenizer
from tasks import fetch_data
from tasks.domain.data import (ALL_FILES, TASKS, LengthBucketSampler, PairCollator, PairExample, SentenceCollator,
                        SentenceExample, example_lengths, get_task, load_paraphrase, load_sentiment,
                        load_similarity, padding_fraction, random_batches)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained()


# ----------------------------------------------------------------------------- loaders on fixtures

def test_sentiment_skips_and_reports_bad_rows(load_logged):
    examples, msgs = load_logged(load_sentiment, FIXTURES / "sst-bad.csv")
    assert [(e.id, e.label) for e in examples] == [("a1", 3), ("a7", 4), ("a10", 0), ("a11", 0)]
    assert examples[0].sentence == "A fine film ."  # stripped, case kept
    assert examples[1].sentence == 'A quoted\ttab and "quotes" .'
    assert examples[2].sentence == "A review over\ntwo lines ."
    assert len(msgs) == 1  # one warning per file, however many bad rows
    msg = msgs[0]
    assert "sst-bad.csv" in msg and "skipped 7 malformed row(s) of 11" in msg
    # line numbers are physical lines (header = line 1); the first five are shown with their reasons
    for expected in ("line 3: empty label", "line 4: label 'positive' is not a number", "line 5: empty sentence",
                     "line 6: label '7' is not an integer in [0, 4]", "line 7: empty id", "; ..."):
        assert expected in msg


def test_cfimdb_range_is_binary(tmp_path, load_logged):
    path = tmp_path / "ids-cfimdb-dev.csv"
    path.write_text("\tid\tsentence\tsentiment\n0\tc1\t Good .\t1\n1\tc2\t Odd .\t2\n")
    examples, msgs = load_logged(TASKS["cfimdb"].loader, path)
    assert [e.id for e in examples] == ["c1"] and "line 3: label '2' is not an integer in [0, 1]" in msgs[0]


def test_paraphrase_with_crlf_and_quoted_tab(load_logged):
    examples, msgs = load_logged(load_paraphrase, FIXTURES / "quora-bad.csv")
    assert [(e.id, e.label) for e in examples] == [("q1", 1), ("q4", 0)]
    assert examples[1].sentence1 == "What does\\t mean?" and examples[1].sentence2 == "Where is the\ttab key?"
    assert len(msgs) == 1 and "quora-bad.csv: skipped 3 malformed row(s) of 5" in msgs[0]
    assert "line 3: empty label" in msgs[0] and "line 4: label '0.5'" in msgs[0] and "line 6: empty sentence2" in msgs[0]


def test_similarity_labels_are_floats_in_range(load_logged):
    examples, msgs = load_logged(load_similarity, FIXTURES / "sts-bad.csv")
    assert [(e.id, e.label) for e in examples] == [("s1", 4.6), ("s4", 0.0)]
    assert all(isinstance(e, PairExample) and isinstance(e.label, float) for e in examples)
    assert "skipped 3 malformed row(s) of 5" in msgs[0] and "line 6: label '-1'" in msgs[0]


def test_unlabelled_file_with_odd_header(load_logged):
    examples, msgs = load_logged(load_sentiment, FIXTURES / "sst-test-student.csv")
    assert msgs == []
    assert examples == [SentenceExample("t1", "Effective but too-tepid biopic", None),
                        SentenceExample("t2", "If you like fun , see it .", None),
                        SentenceExample("t3", "Emotionally strong .", None)]
    with pytest.raises(ValueError, match=r"sst-test-student\.csv.*'sentiment'"):
        load_sentiment(FIXTURES / "sst-test-student.csv", labeled=True)


def test_labeled_false_keeps_rows_with_bad_labels(load_logged):
    examples, msgs = load_logged(load_sentiment, FIXTURES / "sst-bad.csv", labeled=False)
    assert [e.id for e in examples] == ["a1", "a2", "a3", "a4", "a5", "a7", "a8", "a9", "a10", "a11"]
    assert all(e.label is None for e in examples) and examples[3].sentence == ""
    assert "skipped 1 malformed row(s) of 11 (line 7: empty id)" in msgs[0]  # no id: it cannot be submitted
    assert "kept 1 unlabelled row(s) with an empty sentence" in msgs[1]  # predicted: a submission holds every id


def test_wrong_layout_and_missing_file():
    with pytest.raises(ValueError, match=r"wrong-columns\.csv: expected tab-separated columns \['id', 'sentence'\]"):
        load_sentiment(FIXTURES / "wrong-columns.csv")
    with pytest.raises(ValueError, match=r"sst-bad\.csv: expected .*'sentence1', 'sentence2'"):
        load_paraphrase(FIXTURES / "sst-bad.csv")
    with pytest.raises(FileNotFoundError, match="no-such-file.csv"):
        load_similarity(FIXTURES / "no-such-file.csv")


def test_unbalanced_quote_is_an_error_naming_the_line(tmp_path):
    rows = [f"{i}\tid{i}\t Sentence number {i} , long enough to add up to csv's field limit .\t1" for i in range(3000)]
    path = tmp_path / "ids-sst-train.csv"
    path.write_text("\n".join(["\tid\tsentence\tsentiment", rows[0], '1\tq\t"never closed\t2'] + rows[2:]) + "\n")
    with pytest.raises(ValueError, match=r"ids-sst-train\.csv, line 3: unreadable CSV.*unbalanced quote"):
        load_sentiment(path)


def test_registry():
    assert set(TASKS) == {"sst", "cfimdb", "para", "sts"}
    assert len(ALL_FILES) == len(set(ALL_FILES)) == 12
    assert TASKS["para"].filename("train") == "quora-train.csv"
    assert TASKS["sst"].filename("test-student") == "ids-sst-test-student.csv"
    assert [(t.num_classes, t.metric, t.pair) for t in TASKS.values()] == [
        (5, "accuracy", False), (2, "accuracy", False), (2, "accuracy", True), (None, "pearson", True)]
    with pytest.raises(KeyError, match="known tasks: sst"):
        get_task("mnli")
    with pytest.raises(ValueError, match="split"):
        TASKS["sts"].filename("test")


# ----------------------------------------------------------------------------- the real files

REAL = {  # file: (rows kept, rows skipped); quora-train has two rows whose label (and one sentence) is empty
    "ids-sst-train.csv": (8544, 0), "ids-sst-dev.csv": (1101, 0), "ids-sst-test-student.csv": (2210, 0),
    "ids-cfimdb-train.csv": (1707, 0), "ids-cfimdb-dev.csv": (245, 0), "ids-cfimdb-test-student.csv": (488, 0),
    "quora-train.csv": (16212, 2), "quora-dev.csv": (2000, 0), "quora-test-student.csv": (2000, 0),
    "sts-train.csv": (6040, 0), "sts-dev.csv": (863, 0), "sts-test-student.csv": (1725, 0),
}


@pytest.mark.parametrize("task,split", [(t, s) for t in TASKS for s in ("train", "dev", "test-student")])
def test_real_files(task, split, load_logged):
    spec = TASKS[task]
    name = spec.filename(split)
    examples, msgs = load_logged(spec.loader, data_file(name))
    kept, skipped = REAL[name]
    assert len(examples) == kept
    assert len(msgs) == (1 if skipped else 0) and (not skipped or f"skipped {skipped} malformed" in msgs[0])
    assert len({e.id for e in examples}) == kept  # ids are unique
    labels = [e.label for e in examples]
    if split == "test-student":
        assert all(x is None for x in labels)
    elif spec.num_classes:
        assert set(labels) == set(range(spec.num_classes))
    else:
        assert min(labels) == 0.0 and max(labels) == 5.0
    texts = [t for e in examples for t in ((e.sentence1, e.sentence2) if spec.pair else (e.sentence,))]
    assert all(t and t == t.strip() for t in texts)


# ----------------------------------------------------------------------------- collators

SENTS = [SentenceExample("x1", "A short one .", 1), SentenceExample("x2", "A much longer sentence about films .", 4)]
PAIRS = [PairExample("p1", "How old are you?", "What is your age?", 1), PairExample("p2", "Hi", "Hello there, friend", 0)]


def test_sentence_collator(tok):
    batch = SentenceCollator(tok)(SENTS)
    assert batch["ids"] == ["x1", "x2"]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 4]
    lengths = example_lengths(SENTS, tok)
    assert batch["input_ids"].shape == (2, max(lengths)) and batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_ids"][0, lengths[0]:] == tok.pad_token_id).all() and (batch["token_type_ids"] == 0).all()
    short = SentenceCollator(tok, max_length=5)(SENTS)
    assert short["input_ids"].shape == (2, 5) and short["input_ids"][1, -1] == tok.sep_token_id
    unlabelled = SentenceCollator(tok)([SentenceExample("u", "No label .")])
    assert "labels" not in unlabelled and unlabelled["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="mixes labelled and unlabelled"):
        SentenceCollator(tok)([SENTS[0], SentenceExample("u", "No label .")])


def test_pair_collator_siamese(tok):
    batch = PairCollator(tok, mode="siamese")(PAIRS)
    assert set(batch) == {f"{k}_{i}" for k in ("input_ids", "token_type_ids", "attention_mask") for i in (1, 2)} | {
        "labels", "ids"}
    assert batch["labels"].dtype == torch.float and batch["labels"].tolist() == [1.0, 0.0]
    for i, side in ((1, [p.sentence1 for p in PAIRS]), (2, [p.sentence2 for p in PAIRS])):
        alone = tok(side, max_length=128)
        assert torch.equal(batch[f"input_ids_{i}"], alone["input_ids"])
        assert (batch[f"token_type_ids_{i}"] == 0).all()
    assert batch["attention_mask_2"].sum(1).tolist() == [7, 6] and batch["attention_mask_1"].sum(1).tolist() == [7, 3]


def test_pair_collator_cross(tok):
    batch = PairCollator(tok, mode="cross", max_length=9)(PAIRS)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    assert ids.shape == (2, 9) and batch["ids"] == ["p1", "p2"]
    # [CLS] a [SEP] b [SEP]: type 0 up to the first [SEP], then 1; padding is type 0
    first_sep = (ids[1] == tok.sep_token_id).nonzero()[0].item()
    assert ids[1, 0] == tok.cls_token_id and types[1, :first_sep + 1].eq(0).all()
    n = batch["attention_mask"][1].sum().item()
    assert types[1, first_sep + 1:n].eq(1).all() and types[1, n:].eq(0).all() and ids[1, n - 1] == tok.sep_token_id
    assert (ids == tok.sep_token_id).sum(1).tolist() == [2, 2]  # both truncated pairs keep both [SEP]s
    with pytest.raises(ValueError, match="siamese"):
        PairCollator(tok, mode="both")


def test_collator_in_dataloader(tok):
    loader = torch.utils.data.DataLoader(PAIRS * 3, batch_size=4, collate_fn=PairCollator(tok, mode="cross"))
    shapes = [b["input_ids"].shape[0] for b in loader]
    assert shapes == [4, 2]


# ----------------------------------------------------------------------------- bucketing

def test_bucket_sampler_covers_each_index_once_and_is_deterministic():
    lengths = [(i * 7919) % 61 + 1 for i in range(1003)]
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3, bucket_size_multiplier=5)
    epoch0 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(1003)) and len(epoch0) == len(sampler) == 63
    assert epoch0 == list(LengthBucketSampler(lengths, batch_size=16, seed=3, bucket_size_multiplier=5))
    assert list(sampler) == epoch0  # same epoch, same order
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(i for b in epoch1 for i in b) == list(range(1003))
    assert list(LengthBucketSampler(lengths, batch_size=16, seed=4, bucket_size_multiplier=5)) != epoch0
    dropped = LengthBucketSampler(lengths, batch_size=16, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 62 and all(len(b) == 16 for b in dropped)
    ordered = list(LengthBucketSampler(lengths, batch_size=16, shuffle=False, bucket_size_multiplier=1000))
    assert [i for b in ordered for i in b] == sorted(range(1003), key=lengths.__getitem__)


def test_bucketing_cuts_padding_on_sst(tok):
    examples = load_sentiment(data_file("ids-sst-train.csv"))
    lengths = example_lengths(examples, tok)
    shuffled = padding_fraction(random_batches(len(lengths), 32, seed=0), lengths)
    bucketed = padding_fraction(LengthBucketSampler(lengths, 32, seed=0), lengths)
    assert shuffled > 0.4 and bucketed < 0.1  # measured: 0.51 vs 0.03
    assert padding_fraction([[0, 1]], [3, 5]) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- fetch_data

def _source(tmp_path, names):
    src = tmp_path / "src"
    src.mkdir(parents=True)
    for name in names:
        (src / name).write_text(f"\tid\tsentence\n0\t{name}\t text\n")
    return src


def test_fetch_copies_then_keeps(tmp_path):
    src, dest, logs = _source(tmp_path, ALL_FILES), tmp_path / "data", []
    no_download = lambda url, path: pytest.fail(f"tried to download {url}")
    assert fetch_data.fetch(dest, src, downloader=no_download, log=logs.append) == []
    assert sorted(p.name for p in dest.iterdir()) == sorted(ALL_FILES)
    assert (dest / "sts-dev.csv").read_text() == (src / "sts-dev.csv").read_text()
    (dest / "sts-dev.csv").write_text("mine")
    logs.clear()
    assert fetch_data.fetch(dest, src, downloader=no_download, log=logs.append) == []
    assert (dest / "sts-dev.csv").read_text() == "mine" and all(line.startswith("kept") for line in logs)
    fetch_data.fetch(dest, src, force=True, downloader=no_download, log=logs.append)
    assert (dest / "sts-dev.csv").read_text() != "mine"


def test_fetch_downloads_what_the_source_lacks_and_reports_failures(tmp_path, monkeypatch, capsys):
    src, dest = _source(tmp_path, ALL_FILES[:10]), tmp_path / "data"
    urls = []

    def fake_download(url, path):
        urls.append(url)
        if url.endswith("sts-dev.csv"):
            path.write_text("\tid\tsentence1\tsentence2\tsimilarity\n")
        elif url.endswith("sts-test-student.csv"):
            path.write_text("<html>404</html>")  # not a data file: rejected
        else:
            raise OSError("network is down")

    monkeypatch.setattr(fetch_data, "download", fake_download)
    rc = fetch_data.main(["--data_dir", str(dest), "--source", str(src)])
    out, err = capsys.readouterr()
    assert rc == 1 and "could not obtain 1 of 12 files: sts-test-student.csv" in err
    assert urls == [fetch_data.URL.format(name=n) for n in ALL_FILES[10:]]
    assert urls[0] == "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/sts-dev.csv"
    assert (dest / "sts-dev.csv").is_file() and not (dest / "sts-test-student.csv").exists()
    assert "does not look like a CS224N data file" in out and not list(dest.glob(".*.part"))
    rc = fetch_data.main(["--data_dir", str(dest), "--source", str(_source(tmp_path / "b", ALL_FILES[11:]))])
    assert rc == 0 and (dest / "sts-test-student.csv").is_file()


def test_subsample_is_a_fixed_random_sample_in_file_order():
    from tasks.domain.data import subsample

    rows = list(range(100))
    a = subsample(rows, 10)
    assert a == subsample(rows, 10) == sorted(a) and len(set(a)) == 10
    assert a != rows[:10]  # not the prefix: files are ordered (SST train starts with mostly positive rows)
    assert subsample(rows, None) == rows and subsample(rows, 500) == rows and subsample(rows, 0) == []
    with pytest.raises(ValueError, match="max_examples"):
        subsample(rows, -1)
