"""The multitask model's heads, pooling, pair joining and losses, on a tiny random BERT."""
import pytest
import torch
import torch.nn.functional as F

from minibert import BertModel, Tokenizer
from tasks.domain.data import PairCollator, PairExample, SentenceCollator, SentenceExample
from tasks.domain.losses import pearson, similarity_loss
from tasks.domain.metrics import overall_score, pearson_r
from tasks.domain.model import MultitaskBert, join_pair, mean_pool

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
