"""Bad input files get an error naming the file and line, or a skip that is counted and named: never silence."""
import csv
import re

import pytest

from minibert import Tokenizer
from tasks import multitask
from tasks.domain.data import load_paraphrase, load_sentiment, load_similarity
from tasks.domain.processors import SentimentProcessor, SimilarityProcessor

HEADER = "\tid\tsentence\tsentiment\n"


def rows(n, start=0):
    return "".join(f"{i}\tid{i}\t Sentence number {i} .\t{i % 5}\n" for i in range(start, start + n))


def test_a_byte_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "ids-sst-train.csv"
    path.write_bytes((HEADER + rows(3)).encode() + "3\tid3\t Caf\xe9 latin-1 .\t2\n".encode("latin-1") + rows(2, 4).encode())
    with pytest.raises(ValueError, match=r"ids-sst-train\.csv, line 5, column 11: byte 0xe9 is not UTF-8"):
        load_sentiment(path)


def test_a_byte_that_is_not_utf8_deep_in_a_big_file(tmp_path):
    path = tmp_path / "sts-dev.csv"  # far past the first read buffer, where the decoder's offset means nothing
    text = "\tid\tsentence1\tsentence2\tsimilarity\n" + "".join(f"{i}\ts{i}\tA b .\tC d .\t1.0\n" for i in range(3000))
    path.write_bytes(text.encode() + b"3000\ts3000\tA \xff .\tC .\t2\n")
    with pytest.raises(ValueError, match=r"sts-dev\.csv, line 3002, column \d+: byte 0xff is not UTF-8"):
        load_similarity(path)


def test_duplicate_ids_are_skipped_counted_and_named(tmp_path, tiny_checkpoint, load_logged):
    path = tmp_path / "ids-sst-test-student.csv"
    path.write_text("\tid\tsentence\n0\tt1\t One .\n1\tt2\t Two .\n2\tt1\t One again .\n3\tt3\t Three .\n4\tt1\t Once more .\n")
    examples, msgs = load_logged(load_sentiment, path)
    assert [(e.id, e.sentence) for e in examples] == [("t1", "One ."), ("t2", "Two ."), ("t3", "Three .")]
    assert len(msgs) == 1 and "skipped 2 malformed row(s) of 5" in msgs[0]
    assert "line 4: duplicate id 't1' (first on line 2)" in msgs[0] and "line 6: duplicate id 't1' (first on line 2)" in msgs[0]
    proc = SentimentProcessor("sst", Tokenizer.from_pretrained(tiny_checkpoint), test=examples)
    proc.write(tmp_path / "out.csv", [0, 1, 2], "test")
    with open(tmp_path / "out.csv", newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f)]
    assert ids == ["t1", "t2", "t3"]  # one prediction per id


def test_an_unbalanced_quote_that_swallows_rows_names_the_lines(tmp_path, load_logged):
    path = tmp_path / "quora-dev.csv"
    head = "\tid\tsentence1\tsentence2\tis_duplicate\n"
    good = "".join(f"{i}\tq{i}\tIs it {i}?\tIs it really {i}?\t1.0\n" for i in range(2, 6))
    path.write_text(head + '0\tq0\tFine?\tFine.\t0.0\n1\tq1\t"Where does it end?\tHere.\t0.0\n' + good +
                    '6\tq6\tA "quoted" word?\t"Closing" here.\t1.0\n7\tq7\tLast?\tLast.\t0.0\n')
    with pytest.raises(ValueError, match=r"quora-dev\.csv, line 3: a quoted field opening on this line runs on to line 8, "
                                         r"so lines 4-8 were read as part of it, not as rows \(an unbalanced quote\?\)"):
        load_paraphrase(path)  # before: q1 kept, its sentence1 holding rows q2-q5, and no warning at all
    path.write_text(head + '0\tq0\tFine?\tFine.\t0.0\n1\tq1\t"Never closed?\tHere.\t0.0\n' + good)
    with pytest.raises(ValueError, match=r"line 3: a quoted field opening on this line runs on to line 7, so lines 4-7"):
        load_paraphrase(path)  # before: "skipped 1 malformed row(s) of 2 (line 3: empty label)"
    # a quoted sentence over two lines (no row inside it) is still read, as before
    path.write_text(head + '0\tq0\t"Over\ntwo lines?"\tYes.\t1.0\n1\tq1\tNext?\tNext.\t0.0\n')
    examples, msgs = load_logged(load_paraphrase, path)
    assert [e.sentence1 for e in examples] == ["Over\ntwo lines?", "Next?"] and msgs == []


def test_a_training_file_without_rows_stops_before_training_naming_the_file(tmp_path, tiny_checkpoint, tiny_data,
                                                                            caplog, capsys):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    empty = tmp_path / "ids-sst-train.csv"
    empty.write_text(HEADER)
    with pytest.raises(ValueError, match=r"ids-sst-train\.csv: no usable rows .* nothing to train sst on"):
        SentimentProcessor.from_files("sst", tok, train=empty, dev=tiny_data / "ids-sst-dev.csv")
    all_bad = tmp_path / "all-bad.csv"
    all_bad.write_text(HEADER + "0\tx\t Label missing .\t\n")
    with pytest.raises(ValueError, match=r"all-bad\.csv: no usable rows .*every row skipped"):
        SentimentProcessor.from_files("sst", tok, train=all_bad)
    assert "all-bad.csv: skipped 1 malformed" in caplog.text  # a logged notice, not a UserWarning
    with pytest.raises(ValueError, match="nothing to evaluate sst on"):
        SentimentProcessor.from_files("sst", tok, train=tiny_data / "ids-sst-train.csv", dev=empty)
    caplog.clear()
    SentimentProcessor.from_files("sst", tok, test=empty)  # an empty test file is odd, not fatal: said, not silent
    assert [(r.levelname, r.name) for r in caplog.records] == [("WARNING", "tasks.domain.processors")]
    assert re.search(r"ids-sst-train\.csv: no usable rows .*: no sst test predictions will be written", caplog.text)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # the CLI stops at load time, with the message alone
        multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst",
                        "--sst_train", str(empty), "--out_dir", str(tmp_path / "run"),
                        "--predictions_dir", str(tmp_path / "pred")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err  # before: a ValueError's traceback
    assert re.search(r"^\S+: error: \S*ids-sst-train\.csv: no usable rows .*nothing to train sst on$", err, re.M)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_max_examples_limits_train_and_dev_but_test_predictions_cover_every_id(tmp_path, tiny_checkpoint, tiny_data):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    proc = SimilarityProcessor.from_files("sts", tok, train=tiny_data / "sts-train.csv", dev=tiny_data / "sts-dev.csv",
                                          test=tiny_data / "sts-test-student.csv", max_examples=5)
    assert {s: len(v) for s, v in proc.splits.items()} == {"train": 5, "dev": 5, "test": 32}
    multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sts", "--epochs", "1",
                    "--max_examples", "5", "--out_dir", str(tmp_path / "run"), "--predictions_dir", str(tmp_path / "pred")])
    with open(tmp_path / "pred" / "sts-test-output.csv", newline="") as f:
        predicted = [r["id"] for r in csv.DictReader(f)]
    assert predicted == [e.id for e in proc.splits["test"]] and len(predicted) == 32
    assert len((tmp_path / "pred" / "sts-dev-output.csv").read_text().splitlines()) == 6


def test_what_already_worked_still_does(tmp_path, load_logged):
    path = tmp_path / "sts-train.csv"
    path.write_text("\tid\tsentence1\tsentence2\tsimilarity\n0\ts0\tA.\tB.\tnan\n1\ts1\tA.\tB.\tinf\n2\ts2\tA.\tB.\t3.5\n")
    examples, msgs = load_logged(load_similarity, path)
    assert [e.id for e in examples] == ["s2"] and "skipped 2 malformed row(s) of 3" in msgs[0]
    assert "line 2: label 'nan'" in msgs[0] and "line 3: label 'inf'" in msgs[0]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: expected tab-separated columns"):
        load_similarity(tmp_path / "empty.csv")


def test_a_test_row_with_an_empty_sentence_is_still_predicted(tmp_path, tiny_checkpoint, tiny_data, load_logged):
    """A submission holds every id: an unlabelled row with no text is kept (tokens [CLS] [SEP]) and said so;
    before, it was skipped with a warning and the file had 9 predictions for 10 rows."""
    test = tmp_path / "ids-sst-test-student.csv"
    test.write_text("\tid\tsentence\n" + "".join(f"{i}\tt{i}\t{'' if i == 3 else ' Sentence %d .' % i}\n"
                                                 for i in range(10)))
    examples, msgs = load_logged(load_sentiment, test)
    assert [e.id for e in examples] == [f"t{i}" for i in range(10)] and examples[3].sentence == ""
    assert len(msgs) == 1 and "kept 1 unlabelled row(s) with an empty sentence" in msgs[0] and "line 5" in msgs[0]
    pairs = tmp_path / "sts-test-student.csv"
    pairs.write_text("\tid\tsentence1\tsentence2\n0\tp0\tA cat .\t \n1\tp1\tA dog .\tA pup .\n2\t\tNo id .\tNone .\n")
    examples, msgs = load_logged(load_similarity, pairs)
    assert [e.id for e in examples] == ["p0", "p1"]  # a row without an id cannot be submitted: still skipped
    assert "kept 1 unlabelled" in msgs[-1] and "line 2: empty sentence2" in msgs[-1] and "line 4: empty id" in msgs[0]
    dev = tmp_path / "ids-sst-dev.csv"  # a labelled row with no text still teaches nothing: skipped, as before
    dev.write_text(HEADER + "0\td0\t\t3\n1\td1\t Fine .\t2\n")
    examples, msgs = load_logged(load_sentiment, dev)
    assert [e.id for e in examples] == ["d1"] and "skipped 1 malformed row(s) of 2 (line 2: empty sentence)" in msgs[0]

    multitask.main(["--model", str(tiny_checkpoint), "--data_dir", str(tiny_data), "--tasks", "sst", "--epochs", "1",
                    "--max_examples", "5", "--sst_test", str(test), "--out_dir", str(tmp_path / "run"),
                    "--predictions_dir", str(tmp_path / "pred")])
    with open(tmp_path / "pred" / "sst-test-output.csv", newline="") as f:
        predicted = [r["id"].strip() for r in csv.DictReader(f)]
    assert predicted == [f"t{i}" for i in range(10)]
