"""Classifier heads, post-hoc corrections and samplers against their formulas."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from hubtools.errors import ConfigError
from hubtools.longtail.classifiers import get_classifier, logit_adjust, select_tau
from hubtools.longtail.samplers import class_probabilities, get_sampler

torch.set_num_threads(1)

COUNTS = [40, 20, 8, 2]
LABELS = np.repeat(np.arange(4), COUNTS)


def trained_linear(dim=5, c=4, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(dim, c)


def test_cosine_head_is_cosine():
    head = get_classifier("cosine", 5, 4)
    f = torch.randn(3, 5)
    w = head.weight.detach().numpy()
    fn = f.numpy()
    expected = (fn / np.linalg.norm(fn, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(head(f).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_tau_norm_zero_is_weights_without_bias_and_tau_one_normalises():
    lin = trained_linear()
    f = torch.randn(6, 5)
    zero = get_classifier("tau_norm", 5, 4, linear=lin, tau=0.0)
    torch.testing.assert_close(zero(f), f @ lin.weight.t())
    one = get_classifier("tau_norm", 5, 4, linear=lin, tau=1.0)
    w = lin.weight.detach().numpy()
    np.testing.assert_allclose(
        one(f).detach().numpy(),
        f.numpy() @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T,
        rtol=1e-5,
        atol=1e-6,
    )


def test_lws_trains_only_scales():
    lin = trained_linear()
    head = get_classifier("lws", 5, 4, linear=lin)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["scales"]
    f = torch.randn(6, 5)
    torch.testing.assert_close(head(f), lin(f))  # s = 1 at start
    with torch.no_grad():
        head.scales.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    torch.testing.assert_close(head(f), lin(f) * torch.tensor([1.0, 2.0, 0.5, 3.0]))


def test_disalign_formula():
    lin = trained_linear()
    head = get_classifier("disalign", 5, 4, linear=lin)
    with torch.no_grad():
        head.scale.copy_(torch.tensor([1.0, 1.5, 2.0, 0.5]))
        head.shift.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
    f = torch.randn(6, 5)
    z = (f @ lin.weight.t() + lin.bias).numpy()
    sigma = 1 / (1 + np.exp(-(f.numpy() @ np.full(5, 0.1))))[:, None]
    expected = (1 + sigma * head.scale.detach().numpy()) * z + sigma * head.shift.detach().numpy()
    np.testing.assert_allclose(head(f).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not lin.weight.requires_grad


def test_logit_adjust_and_tau_selection():
    z = torch.randn(5, 4)
    pi = np.asarray(COUNTS) / sum(COUNTS)
    np.testing.assert_allclose(logit_adjust(z, COUNTS, 0.5).numpy(), z.numpy() - 0.5 * np.log(pi), atol=1e-6)
    torch.testing.assert_close(logit_adjust(z, COUNTS, 0.0), z)
    assert select_tau(lambda t: -((t - 1.25) ** 2)) == (1.25, 0.0)
    with pytest.raises(ConfigError, match="4 class counts"):
        logit_adjust(torch.zeros(2, 3), COUNTS)


def test_classifier_errors():
    with pytest.raises(ConfigError, match="unknown classifier 'mlp'; valid: linear, cosine"):
        get_classifier("mlp", 5, 4)
    with pytest.raises(ConfigError, match="expected 3 x 5"):
        get_classifier("lws", 5, 3, linear=trained_linear())


@pytest.mark.parametrize(
    ("name", "mass"),
    [
        ("instance", [40, 20, 8, 2]),
        ("class_balanced", [1, 1, 1, 1]),
        ("sqrt", np.sqrt([40, 20, 8, 2])),
        ("reverse", [1, 2, 5, 20]),
    ],
)
def test_class_probabilities(name, mass):
    mass = np.asarray(mass, float)
    np.testing.assert_allclose(class_probabilities(name, COUNTS), mass / mass.sum(), rtol=1e-12)


def test_progressive_and_cb_probabilities():
    inst = np.asarray(COUNTS) / 70
    np.testing.assert_allclose(class_probabilities("progressive", COUNTS, 0, 10), inst)
    np.testing.assert_allclose(class_probabilities("progressive", COUNTS, 10, 10), np.full(4, 0.25))
    np.testing.assert_allclose(class_probabilities("progressive", COUNTS, 4, 10), 0.6 * inst + 0.4 * 0.25)
    n = np.asarray(COUNTS, float)
    w = (1 - 0.9999) / (1 - 0.9999**n)
    np.testing.assert_allclose(class_probabilities("cb", COUNTS), n * w / (n * w).sum(), rtol=1e-6)


def test_sampler_draws_match_probabilities_and_are_seeded():
    s = get_sampler("rs", LABELS, COUNTS, num_samples=20000, seed=3)
    w = s.instance_weights()
    assert w.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.25 / 40) and w[-1] == pytest.approx(0.25 / 2)
    drawn = Counter(LABELS[list(s)].tolist())
    for c in range(4):
        assert drawn[c] / 20000 == pytest.approx(0.25, abs=0.015)
    assert list(s) == list(s)  # same epoch, same draw
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    assert len(get_sampler("instance", LABELS, COUNTS)) == 70


def test_sampler_shards_are_disjoint_slices_of_one_draw():
    one = get_sampler("sqrt", LABELS, COUNTS, seed=1, epoch=2, world_size=3).all_indices().tolist()
    assert len(one) == 72  # 70 padded to a multiple of 3
    shards = [
        list(get_sampler("sqrt", LABELS, COUNTS, seed=1, epoch=2, rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(s) for s in shards] == [24, 24, 24]
    assert [shards[i % 3][i // 3] for i in range(72)] == one  # positions partition, union = one draw


def test_sampler_errors():
    with pytest.raises(ConfigError, match="does not match the class counts"):
        get_sampler("rs", LABELS, [40, 20, 8, 3])
    with pytest.raises(ConfigError, match="unknown sampler 'square'"):
        get_sampler("square", LABELS, COUNTS)
    with pytest.raises(ConfigError, match="needs num_epochs"):
        get_sampler("progressive", LABELS, COUNTS)
