"""tasks/domain/model.py: the multitask model's heads, pooling, pair joining and losses, on a tiny random BERT;
its levers: multi-sample dropout in the heads, the STS cosine maps (in the loss and the predictions)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert import BertModel, Tokenizer
from tasks.domain.data import PairCollator, PairExample, SentenceCollator, SentenceExample
from tasks.domain.losses import pearson, similarity_loss
from tasks.domain.metrics import overall_score, pearson_r
from tasks.domain.model import MultitaskBert, cosine_to_unit, join_pair, mean_pool, multi_sample_dropout

from _tiny_multitask import tiny_multitask as _model, tiny_processor as _processor


def test_multi_sample_dropout_is_the_mean_over_k_masks_in_training_and_one_pass_in_eval():
    head, drop, h = nn.Linear(6, 3), nn.Dropout(0.5), torch.randn(4, 6)
    torch.manual_seed(1)
    got = multi_sample_dropout(head, drop, h, samples=3)
    torch.manual_seed(1)
    expected = sum(head(drop(h)) for _ in range(3)) / 3
    assert torch.allclose(got, expected, atol=1e-6)
    torch.manual_seed(1)
    one = multi_sample_dropout(head, drop, h, samples=1)
    torch.manual_seed(1)
    assert torch.equal(one, head(drop(h)))  # K = 1: the plain head, bit for bit
    drop.eval()
    assert torch.equal(multi_sample_dropout(head, drop, h, samples=5), head(h))


def test_cosine_maps():
    cos = torch.tensor([-1.0, -0.2, 0.0, 0.5, 1.0])
    assert torch.equal(cosine_to_unit(cos, "clamp"), cos)  # the loss sees the cosine; predictions clamp it
    assert torch.allclose(5 * cosine_to_unit(cos, "affine"), torch.tensor([0.0, 2.0, 2.5, 3.75, 5.0]))
    with pytest.raises(ValueError):
        cosine_to_unit(cos, "sigmoid")


def test_head_dropout_samples_average_the_head_over_k_masks(tiny_checkpoint, tiny_data):
    model = _model(tiny_checkpoint, ("sst",), dropout=0.5, head_dropout_samples=4)
    batch = next(_processor(model, tiny_data, "sst").batches(0))
    torch.manual_seed(3)
    got = model.sentiment_logits(batch)
    torch.manual_seed(3)
    h = model.embed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # encoder: no dropout
    expected = sum(model.heads["sentiment"](model.drop(h)) for _ in range(4)) / 4
    assert torch.allclose(got, expected, atol=1e-6)
    model.eval()
    assert torch.equal(model.sentiment_logits(batch), model.heads["sentiment"](h))
    assert "head_dropout_samples" not in model.head_config()  # training only: nothing to save


def test_affine_sts_map_in_the_loss_and_the_predictions(tiny_checkpoint, tiny_data, tmp_path):
    model = _model(tiny_checkpoint, ("sts",), sts_cosine_map="affine").eval()
    proc = _processor(model, tiny_data, "sts")
    batch = next(proc.batches(0))
    u = model.embed(batch["input_ids_1"], batch["attention_mask_1"], batch["token_type_ids_1"])
    v = model.embed(batch["input_ids_2"], batch["attention_mask_2"], batch["token_type_ids_2"])
    cos = F.cosine_similarity(u, v, dim=-1)
    assert torch.allclose(model.similarity_scores(batch), (cos + 1) / 2)
    target = batch["labels"].float() / 5
    assert float(proc.loss(model, batch).detach()) == pytest.approx(float(F.mse_loss((cos + 1) / 2, target).detach()), rel=1e-5)
    assert proc.outputs_to_predictions(model, batch) == pytest.approx((5 * (cos + 1) / 2).tolist(), abs=1e-5)
    folder = model.save_pretrained(tmp_path / "model")
    loaded = MultitaskBert.from_pretrained(folder)
    assert loaded.head_config()["sts_cosine_map"] == "affine"
    a, b = ["the good movie", "why"], ["a great film", "the cat"]
    assert np.allclose(loaded.predict_similarity(a, b), model.predict_similarity(a, b), atol=1e-5)
    with pytest.raises(ValueError, match="cosine"):
        MultitaskBert(model.bert, ("sts",), sts_head="cross", sts_cosine_map="affine")


SENTS = ["the good movie", "a cat sits on the mat", "why", "how do i learn to cook the dog"]


@pytest.fixture(scope="module")
def parts(tiny_checkpoint):
    return BertModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


def test_mean_pool_ignores_padding():
    hidden = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    assert torch.equal(pooled[0], hidden[0, :2].mean(0)) and torch.equal(pooled[1], hidden[1].mean(0))


def test_join_pair_equals_tokenizing_the_pair(parts):
    _, tok = parts
    a, b = SENTS, SENTS[::-1]
    one, two, joint = tok(a), tok(b), tok(a, b)
    ids, types, mask = join_pair(one["input_ids"], one["attention_mask"], two["input_ids"], two["attention_mask"])
    assert torch.equal(ids, joint["input_ids"])
    assert torch.equal(types, joint["token_type_ids"])
    assert torch.equal(mask, joint["attention_mask"])


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
@pytest.mark.parametrize("para_head,sts_head", [("cross", "cosine"), ("siamese", "cross"), ("cross+siamese", "cosine")])
def test_head_shapes_and_losses(parts, pooling, para_head, sts_head):
    encoder, tok = parts
    model = MultitaskBert(encoder, num_labels=5, pooling=pooling, para_head=para_head, sts_head=sts_head).eval()
    sent = SentenceCollator(tok)([SentenceExample(str(i), s, i % 5) for i, s in enumerate(SENTS)])
    assert model.sentiment_logits(sent).shape == (4, 5)
    pairs = [PairExample(str(i), s, SENTS[-1 - i], float(i)) for i, s in enumerate(SENTS)]
    for form in ("siamese", "cross"):
        batch = PairCollator(tok, form)(pairs)
        if form == "cross" and (para_head != "cross"):
            continue  # a Siamese head needs the two sentences apart
        logits = model.paraphrase_logits(batch)
        assert logits.shape == (4,)
        F.binary_cross_entropy_with_logits(logits, (batch["labels"] > 1).float()).backward()
    siamese = PairCollator(tok, "siamese")(pairs)
    scores = model.similarity_scores(siamese)
    assert scores.shape == (4,) and scores.min() >= -1 and scores.max() <= 1
    five = model.predict_similarity(siamese["input_ids_1"], siamese["attention_mask_1"],
                                    siamese["input_ids_2"], siamese["attention_mask_2"])
    assert five.min() >= 0 and five.max() <= 5


def test_cross_head_gives_the_same_logits_from_either_batch_form(parts):
    encoder, tok = parts
    model = MultitaskBert(encoder, para_head="cross").eval()
    pairs = [PairExample(str(i), s, SENTS[-1 - i], 1.0) for i, s in enumerate(SENTS)]
    with torch.no_grad():
        joined = model.paraphrase_logits(PairCollator(tok, "cross")(pairs))
        apart = model.paraphrase_logits(PairCollator(tok, "siamese")(pairs))
    assert torch.allclose(joined, apart, atol=1e-6)


def test_cross_plus_siamese_is_the_mean_of_two_heads_each_with_its_own_loss(parts):
    from tasks.domain.processors import ParaphraseProcessor

    encoder, tok = parts
    torch.manual_seed(0)
    both = MultitaskBert(encoder, tasks=("para",), para_head="cross+siamese").eval()
    cross = MultitaskBert(encoder, tasks=("para",), para_head="cross").eval()
    siamese = MultitaskBert(encoder, tasks=("para",), para_head="siamese").eval()
    cross.heads["paraphrase"].load_state_dict(both.heads["paraphrase"].state_dict())
    siamese.heads["paraphrase"].load_state_dict(both.heads["paraphrase_siamese"].state_dict())
    pairs = [PairExample(str(i), s, SENTS[-1 - i], float(i % 2)) for i, s in enumerate(SENTS)]
    proc = ParaphraseProcessor("para", tok, train=pairs, form="cross+siamese")
    batch = proc.collator()(pairs)
    assert "input_ids_1" in batch  # the sentences apart: the model joins them for the cross-encoder
    with torch.no_grad():
        each = both.paraphrase_head_logits(batch)
        assert each.shape == (4, 2)
        assert torch.allclose(each[:, 0], cross.paraphrase_logits(batch), atol=1e-6)
        assert torch.allclose(each[:, 1], siamese.paraphrase_logits(batch), atol=1e-6)
        assert torch.allclose(both.paraphrase_logits(batch), each.mean(-1))
        labels = batch["labels"].float()
        per_head = [F.binary_cross_entropy_with_logits(each[:, k], labels) for k in range(2)]
        assert proc.loss(both, batch).item() == pytest.approx((per_head[0] + per_head[1]).item() / 2, rel=1e-6)


def test_pretrain_option_only_heads_train(parts):
    encoder, _ = parts
    model = MultitaskBert(encoder)
    assert set(model.heads) == {"sentiment", "paraphrase"}  # the cosine STS head has no parameters
    assert model.head_config()["num_labels"] == 5


def test_pearson_loss_against_numpy_and_scipy():
    x, y = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    assert pearson(x, y).item() == pytest.approx(pearson_r(x.numpy(), y.numpy()), abs=1e-12)
    assert similarity_loss(x, y, "mse").item() == pytest.approx(((x - y) ** 2).mean().item())
    expected = ((x - y) ** 2).mean().item() + 1 - pearson_r(x.numpy(), y.numpy())
    assert similarity_loss(x, y, "mse+corr").item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="mse"):
        similarity_loss(x, y, "huber")


def test_overall_score_is_the_coursework_formula():
    assert overall_score({"sst": 0.5, "para": 0.8, "sts": 0.6}) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert overall_score({"sst": 0.5}) == 0.5


def test_symmetric_pairs_swap_in_training_and_average_both_orders_in_prediction(parts):
    from tasks.domain.processors import ParaphraseProcessor, SimilarityProcessor, swapped

    encoder, tok = parts
    model = MultitaskBert(encoder, num_labels=5, para_head="cross", sts_head="cross").eval()
    pairs = [PairExample(str(i), s, SENTS[-1 - i], float(i % 2)) for i, s in enumerate(SENTS)]
    proc = ParaphraseProcessor("para", tok, train=pairs * 8, dev=pairs, batch_size=4, seed=3, symmetric=True)

    # training: the same batches as without the flag, about half the pairs in the other order
    plain = ParaphraseProcessor("para", tok, train=pairs * 8, batch_size=4, seed=3)
    by_id = {e.id: e for e in pairs}
    flipped = kept = 0
    for sym, ref in zip(proc.batches(0), plain.batches(0)):
        assert sym["ids"] == ref["ids"]
        for row, ex_id in enumerate(sym["ids"]):
            ids = sym["input_ids"][row][sym["attention_mask"][row].bool()].tolist()
            one = tok(by_id[ex_id].sentence1, by_id[ex_id].sentence2)["input_ids"][0].tolist()
            other = tok(by_id[ex_id].sentence2, by_id[ex_id].sentence1)["input_ids"][0].tolist()
            assert ids in (one, other)
            flipped, kept = flipped + (ids == other), kept + (ids == one)
    assert flipped > 4 and kept > 4
    again = [b["input_ids"].tolist() for b in proc.batches(0)]
    assert again == [b["input_ids"].tolist() for b in proc.batches(0)]  # fixed by (seed, epoch)

    # prediction: the mean of the two orders' logits, so swapping every dev pair changes nothing
    with torch.no_grad():
        collate = PairCollator(tok, "cross")
        forward = model.paraphrase_logits(collate(pairs))
        backward = model.paraphrase_logits(collate([swapped(e) for e in pairs]))
    assert not torch.allclose(forward, backward)  # the cross-encoder alone is order-dependent
    expected = ((forward + backward) / 2 > 0).long().tolist()
    assert proc.predict(model, "dev") == expected
    proc.splits["dev"] = [swapped(e) for e in pairs]
    assert proc.predict(model, "dev") == expected

    sts = SimilarityProcessor("sts", tok, dev=pairs, form="cross", symmetric=True)
    with torch.no_grad():
        mean = (model.similarity_scores(collate(pairs)) + model.similarity_scores(collate([swapped(e) for e in pairs]))) / 2
    assert torch.allclose(torch.tensor(sts.predict(model, "dev")), (5 * mean).clamp(0, 5), atol=1e-6)
