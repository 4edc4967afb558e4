"""The fake probe and the diversity measures, on synthetic data where the answer is known."""
import math

import pytest
import torch

from gan.diversity import coverage, diversity, knn_radii, precision, spread_ratio
from gan.model import EmbeddingGan, GanConfig
from gan.probe import fake_probe, fit_linear_probe, fit_real_space, fit_reference, score_fakes
from tasks.studies.stats import mean_sd, paired_interval


K, DIM, CONSTANT = 5, 12, [3, 7, 10]  # 5 classes in 12-D; dimensions 3, 7 and 10 are constant in the real data


def _real(n_per_class, seed):
    """Gaussian classes whose means differ in the varying dimensions; the constant ones sit at 0.7 ± 1e-7,
    as all-MiniLM-L6-v2's dimensions 127, 223 and 319 do (near-constant, not exactly)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, DIM, generator=torch.Generator().manual_seed(0)) * 2.5
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = means[y] + torch.randn(len(y), DIM, generator=g)
    x[:, CONSTANT] = 0.7 + 1e-7 * torch.randn(len(y), len(CONSTANT), generator=g)
    return x, y


def _label_free(n, seed):
    """Points from the pooled real distribution (a random class each), with labels that say nothing about them."""
    x, _ = _real(n // K, seed)
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))], torch.arange(K).repeat_interleave(n // K)


@pytest.fixture(scope="module")
def reference():
    x, y = _real(400, seed=1)
    return fit_reference(x, y, K)


def test_real_space_drops_the_constant_dimensions_and_keeps_the_varying_ones():
    x, _ = _real(200, seed=1)
    space = fit_real_space(x)
    assert space.keep.tolist() == [i not in CONSTANT for i in range(DIM)]
    assert space(x).shape[1] <= DIM - len(CONSTANT) and space.off_subspace(x) < 0.1 + 1e-9


def test_fakes_that_carry_the_label_are_read_by_it(reference):
    fake, labels = _real(200, seed=2)
    out = score_fakes(reference, fake, labels)
    assert out["probe_acc"] > 0.9 and out["centroid_acc"] > 0.9 and out["fake_class_entropy"] > 0.95


def test_fakes_that_do_not_carry_the_label_are_at_chance(reference):
    fake, labels = _label_free(1000, seed=3)
    out = score_fakes(reference, fake, labels)
    assert abs(out["probe_acc"] - 0.2) < 0.06 and abs(out["centroid_acc"] - 0.2) < 0.06, out


def test_a_label_written_only_in_a_constant_dimension_is_at_chance(reference):
    """The label is readable, but only along a direction the real data never varies in: not a real class."""
    fake, labels = _label_free(1000, seed=4)
    fake[:, CONSTANT[0]] = 0.7 + 0.05 * labels
    out = score_fakes(reference, fake, labels)
    assert abs(out["probe_acc"] - 0.2) < 0.06 and abs(out["centroid_acc"] - 0.2) < 0.06, out


def test_an_offset_in_the_constant_dimensions_does_not_hide_the_label(reference):
    """The old probe's failure: class-carrying fakes, off by 0.05 in the constant dimensions, all read as one
    class by a probe that standardises raw dimensions (std ≈ 1e-7 there); the new measures still read 90%+."""
    fake, labels = _real(200, seed=5)
    fake[:, CONSTANT] += 0.05
    out = score_fakes(reference, fake, labels)
    assert out["probe_acc"] > 0.9 and out["centroid_acc"] > 0.9
    x, y = _real(400, seed=1)
    old = fit_linear_probe(x, y, K)  # the first probe: standardise every raw dimension, logistic regression
    assert old.accuracy(x, y) > 0.9 and old.accuracy(fake, labels) < 0.3  # fooled: all one class, 0.2 (a control)


def test_fake_probe_on_a_model_gives_every_number_and_nothing_for_plain(reference):
    x, y = _real(100, seed=1)
    for method, conditional in (("acganbert", True), ("ganbert", False)):
        model = EmbeddingGan(DIM, K, GanConfig(method=method, noise_dim=4))
        out = fake_probe(model.train(), x, y, per_class=20, reference=reference)
        assert model.training  # left as it was
        assert {"chance", "off_subspace", "fake_class_entropy", "coverage", "precision", "spread"} <= set(out)
        assert ("probe_acc" in out) == conditional and ("class_coverage" in out) == conditional
        assert out["chance"] == pytest.approx(0.2)
        again = fake_probe(model, x, y, per_class=20, reference=reference)
        assert again == out  # a fixed seed: the same fakes
    assert fake_probe(EmbeddingGan(DIM, K, GanConfig(method="plain")), x, y) == {}


# ---- diversity -------------------------------------------------------------------------------------------------
def test_knn_radii_coverage_and_precision_by_hand():
    real = torch.tensor([[0.0], [1.0], [3.0]])
    radii = knn_radii(real, k=1)  # nearest other point: 1, 1, 2
    assert radii.tolist() == [1.0, 1.0, 2.0]
    fake = torch.tensor([[0.5], [10.0]])  # inside the balls of 0 and 1 (and not of 3: |3 − 0.5| > 2); 10 in none
    assert coverage(real, radii, fake) == pytest.approx(2 / 3) and precision(real, radii, fake) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="k must be"):
        knn_radii(real, k=3)


def test_collapsed_fakes_score_low_and_real_like_fakes_about_one():
    real, y = _real(200, seed=1)
    real = real[:, [i for i in range(DIM) if i not in CONSTANT]]
    radii = knn_radii(real, k=5)
    same, y_same = _real(200, seed=2)
    same = same[:, [i for i in range(DIM) if i not in CONSTANT]]
    centroids = torch.stack([real[y == c].mean(0) for c in range(K)])
    collapsed = centroids[y_same] + 0.01 * torch.randn(len(y_same), real.size(1))  # one prototype per class
    good, bad = diversity(real, y, radii, same, y_same), diversity(real, y, radii, collapsed, y_same)
    assert good["spread"] == pytest.approx(1.0, abs=0.15) and good["coverage"] > 0.95 and good["class_coverage"] > 0.9
    assert good["precision"] > 0.85  # fakes in the tails fall outside every ball: about 0.9 here
    assert bad["spread"] < 1e-3 and bad["coverage"] < 0.25 and bad["class_coverage"] < 0.25  # the balls around each mean
    unconditional = diversity(real, y, radii, collapsed)
    assert "class_coverage" not in unconditional and unconditional["coverage"] < 0.25
    assert unconditional["spread"] > 0.5  # total variance: 5 far-apart prototypes keep most of it, so coverage tells


def test_spread_ratio_is_zero_for_collapsed_fakes_and_one_for_real_like_ones():
    g = torch.Generator().manual_seed(0)
    real, y = torch.randn(400, 6, generator=g), torch.arange(400) % 2
    assert spread_ratio(real, y, torch.randn(400, 6, generator=g), y) == pytest.approx(1.0, abs=0.2)
    assert spread_ratio(real, y, 0.01 * torch.randn(400, 6, generator=g), y) < 1e-3


# ---- summaries over seeds -------------------------------------------------------------------------------------
def test_mean_sd_and_the_paired_interval_by_hand():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([5.0]) == (5.0, 0.0)
    gan, plain = {1: 0.42, 2: 0.40, 3: 0.45}, {1: 0.40, 2: 0.39, 3: 0.42, 4: 0.5}  # seed 4 has no pair
    out = paired_interval(gan, plain)
    d = [0.02, 0.01, 0.03]  # mean 0.02, sd 0.01; t(0.975, 2) = 4.303
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(sum(d) / 3) and out["sd"] == pytest.approx(0.01)
    assert (out["lo"], out["hi"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert math.isnan(paired_interval({1: 0.3}, {1: 0.2})["lo"])
