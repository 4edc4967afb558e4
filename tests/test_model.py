"""tasks/domain/model.py's levers: multi-sample dropout in the heads, the STS cosine maps (in the loss and the
predictions)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _tiny_multitask import tiny_multitask as _model, tiny_processor as _processor
from tasks.domain.model import cosine_to_unit, multi_sample_dropout, MultitaskBert


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
