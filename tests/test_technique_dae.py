"""The denoising-autoencoder phase: word deletion, BERT masking, the causal decoder, the TSDAE decoder tied to
the encoder (the same Parameter objects), and that the decoder overfits a handful of sentences through
nothing but their sentence vectors."""
import random
import warnings

import pytest
import torch

from minibert import BertModel, Tokenizer
from tasks.techniques.dae import (DenoisingAutoencoder, DenoisingProcessor, causal_mask, delete_words, mask_tokens,
                       masked_lm_around)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 0.9])
def test_word_deletion_keeps_the_ratio_the_order_and_at_least_one_word(ratio):
    rng = random.Random(0)
    for n in range(1, 30):
        words = [f"w{i}" for i in range(n)]
        out = delete_words(" ".join(words), ratio, rng).split()
        assert len(out) == max(1, n - round(ratio * n))
        assert out == [w for w in words if w in out]  # a subsequence: nothing added, order kept
    with pytest.raises(ValueError, match="ratio"):
        delete_words("a b", 1.0, rng)


def test_masking_follows_bert_and_never_touches_special_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (64, 40))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS], [SEP]
    special[:8, 20:] = True  # padding
    inputs, labels = mask_tokens(ids, special, mask_id=4, vocab_size=100, prob=0.15, generator=g)
    chosen = labels != -100
    assert not (chosen & special).any() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert chosen.any(1).all()
    assert chosen.sum() / (~special).sum() == pytest.approx(0.15, abs=0.02)
    assert (inputs[chosen] == 4).float().mean() == pytest.approx(0.8, abs=0.05)
    short = torch.tensor([[2, 7, 3]])  # one real token, drawn or not: every row predicts at least one
    _, labels = mask_tokens(short, torch.tensor([[True, False, True]]), 4, 100, 0.01, g)
    assert labels.tolist() == [[-100, 7, -100]]


def test_causal_mask_sees_only_earlier_real_positions():
    mask = causal_mask(torch.tensor([[1, 1, 1, 0]]), torch.float32)[0, 0]  # (T, T)
    allowed = mask == 0
    assert allowed.tolist() == [[True, False, False, False], [True, True, False, False],
                                [True, True, True, False], [True, True, True, False]]


def _tiny(tiny_checkpoint, **kw):
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    encoder = BertModel.from_pretrained(tiny_checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tok, encoder, DenoisingAutoencoder(encoder, **kw)


SENTENCES = ["the good movie runs on grass", "a cat sits on the mat", "why do you cook", "the film was awful"]


def test_decoder_is_causal_and_reads_the_input_only_through_the_sentence_vector(tiny_checkpoint):
    tok, _, dae = _tiny(tiny_checkpoint)
    dae.eval()
    batch = DenoisingProcessor(SENTENCES, tok, batch_size=4).collate(SENTENCES, random.Random(0))
    logits = dae.reconstruction_logits(batch)
    changed = dict(batch, target_ids=batch["target_ids"].clone())
    changed["target_ids"][:, 4:] = 7  # change the future: earlier predictions must not move
    assert torch.equal(dae.reconstruction_logits(changed)[:, :3], logits[:, :3])
    s = dae.embed(batch["input_ids"], batch["attention_mask"])
    again = dae.decoder(dae.bert.embeddings, batch["target_ids"][:, :-1], batch["target_mask"][:, :-1], s)
    assert torch.equal(again, logits)  # the noisy input enters only as s


@pytest.mark.parametrize("kw", [{}, dict(tie_encoder_decoder=False, init_from_encoder=False)], ids=["tied", "random"])
def test_dae_decoder_overfits_a_handful_of_sentences(tiny_checkpoint, kw):
    tok, encoder, dae = _tiny(tiny_checkpoint, **kw)
    proc = DenoisingProcessor(SENTENCES, tok, deletion_ratio=0.6, batch_size=4)
    batch = proc.collate(SENTENCES, random.Random(0))  # fixed noise: the same noisy inputs every step
    optimizer = torch.optim.AdamW(dae.parameters(), lr=3e-3)
    first = proc.loss(dae, batch).item()
    for _ in range(150):
        loss = proc.loss(dae, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dae.eval()
    assert proc.loss(dae, batch).item() < 0.05 * first
    predicted = dae.reconstruction_logits(batch).argmax(-1)  # teacher-forced next tokens
    target, real = batch["target_ids"][:, 1:], batch["target_mask"][:, 1:].bool()
    assert torch.equal(predicted[real], target[real])
    assert any(len(tok.decode(i).split()) < len(s.split()) for i, s in zip(batch["input_ids"], SENTENCES))


def test_tied_decoder_is_the_encoders_layers_as_in_tsdae(tiny_checkpoint):
    _, encoder, dae = _tiny(tiny_checkpoint)
    fresh = BertModel.from_pretrained(tiny_checkpoint)
    assert len(dae.decoder.layers) == encoder.config.num_hidden_layers  # full depth
    for mine, theirs in zip(dae.decoder.layers, encoder.layers):
        for name in ("attn", "attn_norm", "ffn", "ffn_norm"):
            a, b = dict(getattr(mine, name).named_parameters()), dict(getattr(theirs, name).named_parameters())
            assert a.keys() == b.keys() and all(a[k] is b[k] and a[k].data_ptr() == b[k].data_ptr() for k in a)
    assert all(torch.equal(p, q) for p, q in zip(encoder.parameters(), fresh.parameters()))  # nothing re-initialised
    new = [n for n, _ in dae.named_parameters() if n.startswith("decoder.")]
    assert new and all(".cross" in n or n.startswith("decoder.head.") for n in new)  # the only new weights
    s = dae.embed(torch.tensor([[2, 40, 41, 3]]), torch.ones(1, 4, dtype=torch.long))
    dae.decoder(dae.bert.embeddings, torch.tensor([[2, 40, 41]]), torch.ones(1, 3), s).sum().backward()
    q = encoder.layers[0].attn.query.weight
    before = q.detach().clone()
    torch.optim.SGD(dae.parameters(), lr=0.1).step()
    assert not torch.equal(q, before) and dae.decoder.layers[0].attn.query.weight is q  # one update, both roles


def test_mlm_objective_trains_the_shared_encoder(tiny_checkpoint):
    tok, encoder, _ = _tiny(tiny_checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlm = masked_lm_around(encoder, tiny_checkpoint)
    assert mlm.bert is encoder and any("no MLM head" in str(w.message) for w in caught)
    proc = DenoisingProcessor(SENTENCES, tok, objective="mlm", batch_size=2, seed=3)
    first, again = list(proc.batches(0)), list(proc.batches(0))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))  # (seed, epoch) fixes it
    assert all((b["labels"] != -100).any(1).all() for b in first)
    before = encoder.layers[0].ffn.up.weight.detach().clone()
    proc.loss(mlm, first[0]).backward()
    torch.optim.SGD(mlm.parameters(), lr=0.1).step()
    assert not torch.equal(encoder.layers[0].ffn.up.weight, before)
