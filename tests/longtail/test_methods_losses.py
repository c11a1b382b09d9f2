"""Each long-tail loss against a NumPy computation of its paper's formula on hand-built inputs."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hubtools.errors import ConfigError
from hubtools.longtail import losses as L
from hubtools.longtail.methods import METHODS, get_loss

torch.set_num_threads(1)

COUNTS = [40, 20, 8, 2]
Z = np.array(
    [
        [2.0, -1.0, 0.5, 0.0],
        [0.1, 0.3, -0.2, 1.5],
        [-0.7, 0.2, 1.1, -0.4],
        [0.0, 0.0, 0.0, 3.0],
        [1.2, 0.8, -1.5, 0.3],
    ]
)
Y = np.array([0, 1, 2, 3, 3])


def t(z=Z, y=Y):
    return torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def np_logsoftmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_ce(z, y, w=None):
    nll = -np_logsoftmax(z)[np.arange(len(y)), y]
    if w is None:
        return nll.mean()
    return (w[y] * nll).sum() / w[y].sum()


def np_cb_weights(counts, beta=0.9999):
    n = np.asarray(counts, float)
    w = (1 - beta) / (1 - beta**n)
    return w / w.sum() * len(n)


PRIOR = np.asarray(COUNTS, float) / sum(COUNTS)


def value(name, z=Z, y=Y, counts=COUNTS, **kw):
    return float(get_loss(name, counts, **kw)(*t(z, y)))


def test_erm_and_weighted_losses():
    assert value("erm") == pytest.approx(np_ce(Z, Y), rel=1e-6)
    n = np.asarray(COUNTS, float)
    assert value("weighted_softmax") == pytest.approx(np_ce(Z, Y, 1 + np.log(n.max() / n)), rel=1e-6)
    assert value("rw") == pytest.approx(np_ce(Z, Y, np_cb_weights(COUNTS)), rel=1e-6)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    assert value("weighted_ce", weight=w.tolist()) == pytest.approx(np_ce(Z, Y, w), rel=1e-6)
    pi = PRIOR ** (-1.2)
    assert value("disalign") == pytest.approx(np_ce(Z, Y, pi / pi.sum() * 4), rel=1e-6)


def test_cb_weights_sum_to_c_and_follow_effective_number():
    w = L.class_balanced_weights(COUNTS).numpy()
    assert w.sum() == pytest.approx(len(COUNTS), rel=1e-6)
    np.testing.assert_allclose(w, np_cb_weights(COUNTS), rtol=1e-5)
    assert np.all(np.diff(w) > 0)  # rarer class, larger weight


def test_focal_and_class_balanced():
    logp = np_logsoftmax(Z)[np.arange(5), Y]
    focal = ((1 - np.exp(logp)) ** 2 * -logp).mean()
    assert value("focal") == pytest.approx(focal, rel=1e-6)
    assert value("focal", gamma=0.0) == pytest.approx(np_ce(Z, Y), rel=1e-6)
    w = np_cb_weights(COUNTS)
    assert value("cb_softmax") == pytest.approx((w[Y] * -logp).mean(), rel=1e-6)
    # legacy: BCE of softmax probabilities against one-hot, weight w_y on every output, mean over B x C
    p = np.exp(np_logsoftmax(Z))
    onehot = np.eye(4)[Y]
    bce = -(onehot * np.log(p) + (1 - onehot) * np.log(1 - p))
    assert value("cb_softmax", legacy=True) == pytest.approx((w[Y][:, None] * bce).mean(), rel=1e-5)
    sig = 1 / (1 + np.exp(-Z))
    pt = np.where(onehot > 0, sig, 1 - sig)
    cbf = (w[Y] * ((1 - pt) ** 2 * -np.log(pt)).sum(axis=1)).sum() / len(Y)
    assert value("cb_focal") == pytest.approx(cbf, rel=1e-5)


def test_logit_adjusted_family():
    assert value("balanced_softmax") == pytest.approx(np_ce(Z + np.log(PRIOR), Y), rel=1e-6)
    assert value("prior_ce") == pytest.approx(np_ce(Z + np.log(PRIOR + 1e-9), Y), rel=1e-6)
    assert value("la_loss", tau=0.5) == pytest.approx(np_ce(Z + 0.5 * np.log(PRIOR), Y), rel=1e-6)
    # the anchor's sign: CE(z - log(n_c / n_max)), same as CE(z - log pi) up to a constant shift
    anchor = np_ce(Z - np.log(np.asarray(COUNTS) / max(COUNTS)), Y)
    assert value("la_loss", legacy_sign=True) == pytest.approx(anchor, rel=1e-6)
    delta, iota = (np.asarray(COUNTS) / 40) ** 0.3, np.log(PRIOR)
    assert value("vs") == pytest.approx(np_ce(Z * delta + iota, Y), rel=1e-6)


@pytest.mark.parametrize("name", ["balanced_softmax", "prior_ce", "la_loss", "lade"])
def test_prior_losses_equal_ce_with_uniform_counts(name):
    kw = {"alpha": 0.0} if name == "lade" else {}
    assert value(name, counts=[7, 7, 7, 7], **kw) == pytest.approx(np_ce(Z, Y), rel=1e-6)


def test_vs_with_zero_gamma_and_tau_is_ce():
    assert value("vs", gamma=0.0, tau=0.0) == pytest.approx(np_ce(Z, Y), rel=1e-6)


def np_lade(z, y, counts, lam=0.1):
    pi = np.asarray(counts, float) / sum(counts)
    b, c = z.shape
    spread = z - np.log(pi) - np.log(c)
    m = spread.max(axis=0)
    t_c = m + np.log(np.exp(spread - m).sum(axis=0)) - np.log(b)
    f_c = np.array([z[y == k, k].sum() / ((y == k).sum() + 1e-8) for k in range(c)])
    return -(pi * (f_c - t_c - lam * t_c**2)).sum()


def test_lade_against_formula_and_absent_classes():
    expected = np_ce(Z + np.log(PRIOR + 1e-9), Y) + 0.1 * np_lade(Z, Y, COUNTS)
    assert value("lade") == pytest.approx(expected, rel=1e-5)
    assert value("lade", alpha=0.0) == pytest.approx(value("prior_ce"), rel=1e-6)
    y_missing = np.array([0, 0, 1, 1, 0])  # classes 2 and 3 absent from the batch
    got = value("lade", y=y_missing)
    assert math.isfinite(got)
    assert got == pytest.approx(
        np_ce(Z + np.log(PRIOR + 1e-9), y_missing) + 0.1 * np_lade(Z, y_missing, COUNTS), rel=1e-5
    )


def test_ldam_margins_loss_and_zero_margin():
    loss = get_loss("ldam_drw", COUNTS, num_epochs=10)
    q = np.asarray(COUNTS, float) ** -0.25
    np.testing.assert_allclose(loss.margins.numpy(), 0.5 * q / q.max(), rtol=1e-6)
    assert float(loss.margins[-1]) == pytest.approx(0.5)
    cos = np.tanh(Z)  # cosines in [-1, 1]
    shifted = cos - np.eye(4)[Y] * (0.5 * q / q.max())[Y][:, None]
    assert float(loss(*t(cos))) == pytest.approx(np_ce(30 * shifted, Y), rel=1e-5)
    zero = get_loss("ldam_drw", COUNTS, num_epochs=10, max_m=0.0, s=5.0)
    assert float(zero(*t(cos))) == pytest.approx(np_ce(5 * cos, Y), rel=1e-6)


@pytest.mark.parametrize(("epochs", "switch"), [(1, 1), (2, 1), (10, 8), (50, 40)])
def test_drw_switches_at_floor_08_epochs(epochs, switch):
    loss = get_loss("ldam_drw", COUNTS, num_epochs=epochs)
    cos = np.tanh(Z)
    for e in range(epochs + 1):
        loss.set_epoch(e)
        assert (loss.weight is not None) == (e >= switch), e
    loss.set_epoch(switch)
    q = np.asarray(COUNTS, float) ** -0.25
    shifted = cos - np.eye(4)[Y] * (0.5 * q / q.max())[Y][:, None]
    assert float(loss(*t(cos))) == pytest.approx(np_ce(30 * shifted, Y, np_cb_weights(COUNTS)), rel=1e-5)


def test_seql_is_ce_without_rare_classes_and_masks_gamma_of_eligible():
    with pytest.warns(UserWarning, match="no class has a prior below"):
        loss = get_loss("seql", COUNTS, lambda_=4.3e-4)  # the paper's lambda masks nothing here
    assert float(loss(*t())) == pytest.approx(np_ce(Z, Y), rel=1e-6)
    counts = [5000] * 3 + [1] * 3  # classes 3..5 have prior 2e-4 < 4.3e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seql = get_loss("seql", counts, lambda_=4.3e-4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 6, (4000,), generator=torch.Generator().manual_seed(1))
    z = torch.zeros(4000, 6)
    mask = seql.drop_mask(z, y)
    eligible = torch.tensor([False] * 3 + [True] * 3)[None, :] & (F.one_hot(y, 6) == 0)
    assert not bool(mask[~eligible].any())  # never the target, never a frequent class
    assert float(mask[eligible].float().mean()) == pytest.approx(0.9, abs=0.02)
    # value: p_y = e^{z_y} / sum_j w_j e^{z_j} with the drawn mask
    z6 = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    y6 = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])
    seql.generator.manual_seed(7)
    got = float(seql(z6, y6))
    seql.generator.manual_seed(7)
    w = (~seql.drop_mask(z6, y6)).double().numpy()
    zn = z6.double().numpy()
    p_y = np.exp(zn[np.arange(8), y6]) / (w * np.exp(zn)).sum(axis=1)
    assert got == pytest.approx(-np.log(p_y).mean(), rel=1e-5)


def test_seql_lambda_few_targets_the_few_group():
    seql = get_loss("seql", COUNTS, lambda_="few", medium=3)
    assert seql.rare.tolist() == [False, False, False, True]


def test_gcl_noise_zero_on_head_column_and_formula():
    gcl = get_loss("gcl", COUNTS, generator=torch.Generator().manual_seed(0))
    cos = torch.tanh(torch.tensor(Z, dtype=torch.float32))
    noisy = gcl.noisy_cosines(cos)
    assert torch.equal(noisy[:, 0], cos[:, 0])
    assert bool((noisy[:, 1:] <= cos[:, 1:]).all())
    gap = np.log(40) - np.log(np.asarray(COUNTS, float))
    assert float((cos - noisy)[:, 3].max()) <= 0.5 * gap[3] / gap.max() + 1e-6
    gcl.eval()
    assert float(gcl(cos, torch.tensor(Y))) == pytest.approx(np_ce(30 * np.tanh(Z), Y), rel=1e-5)


def test_mislas_label_aware_smoothing():
    n = np.asarray(COUNTS, float)
    eps = 0.3 * np.sin(np.pi / 2 * (n - n.min()) / (n.max() - n.min()))
    assert eps[0] == pytest.approx(0.3) and eps[-1] == 0.0
    target = np.where(np.eye(4)[Y] > 0, 1 - eps[Y][:, None], eps[Y][:, None] / 3)
    expected = -(target * np_logsoftmax(Z)).sum(axis=1).mean()
    assert value("mislas") == pytest.approx(expected, rel=1e-6)


def test_gradient_of_balanced_softmax_matches_formula():
    z, y = t()
    z.requires_grad_(True)
    get_loss("balanced_softmax", COUNTS)(z, y).backward()
    p = np.exp(np_logsoftmax(Z + np.log(PRIOR)))
    np.testing.assert_allclose(z.grad.numpy(), (p - np.eye(4)[Y]) / len(Y), atol=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_finite_differentiable_loss(name):
    epochs = {"num_epochs": 2}
    kw = {
        "weighted_ce": {"weight": [1, 1, 2, 2]},
        "ldam_drw": epochs,
        "sam": epochs,
        "ride": epochs,
        "rsg": epochs,
        "seql": {"medium": 2},
    }.get(name, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = get_loss(name, COUNTS, **kw)
    z, y = t(np.tanh(Z))
    if isinstance(loss, L.ExpertLoss):  # expert logits K x B x C
        z = torch.stack([z, z.flip(1), 2 * z])
    z.requires_grad_(True)
    extra = {"features": torch.tanh(z[:, :3] * 2)} if getattr(loss, "needs_features", False) else {}
    out = loss(z, y, **extra)
    out.backward()
    assert out.ndim == 0 and math.isfinite(out.detach().item()) and torch.isfinite(z.grad).all()


def test_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown long-tail method 'ldam'.*valid: erm, rs"):
        get_loss("ldam", COUNTS)
    with pytest.raises(ConfigError, match="built for 4 classes.*shape \\(5, 3\\)"):
        get_loss("balanced_softmax", COUNTS)(torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ConfigError, match="needs weight"):
        get_loss("weighted_ce", COUNTS)
    with pytest.raises(ConfigError, match="needs num_epochs"):
        get_loss("ldam_drw", COUNTS)
    with pytest.raises(ConfigError, match="takes no option gamma"):
        get_loss("balanced_softmax", COUNTS, gamma=2)
    with pytest.raises(ConfigError, match="positive"):
        get_loss("erm", [10, 0, 3])
