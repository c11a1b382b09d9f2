"""The methods added to the registry (flex_rs, mixup, randaugment, mislas, range_loss, sam, knn, de_confound,
gcl_2nd, bbn, sade, ride) against NumPy computations of the papers' formulas on hand-built inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hubtools.errors import ConfigError
from hubtools.longtail import losses as L
from hubtools.longtail.augment import RandAugment, mixup_batch, mixup_loss
from hubtools.longtail.classifiers import get_classifier
from hubtools.longtail.experts import ExpertHeads
from hubtools.longtail.methods import METHODS, get_loss, method_options
from hubtools.longtail.samplers import PairedSampler, class_probabilities, get_sampler
from hubtools.longtail.trainer import bbn_alpha, sam_rho, sam_surrogate

torch.set_num_threads(1)

COUNTS = [40, 20, 8, 2]
LABELS = np.repeat(np.arange(4), COUNTS)
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
PRIOR = np.asarray(COUNTS, float) / sum(COUNTS)


def tt(a, dtype=torch.float32):
    return torch.tensor(np.asarray(a), dtype=dtype)


def np_logsoftmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_ce(z, y, w=None):
    nll = -np_logsoftmax(z)[np.arange(len(y)), y]
    return nll.mean() if w is None else (w[y] * nll).sum() / w[y].sum()


# ---------------------------------------------------------------- registry


def test_registry_groups_and_every_monica_method_is_registered():
    monica = {
        "re-sampling": {"rs", "cb_sampler", "reverse", "flex_rs"},
        "re-weighting": {"rw", "weighted_softmax", "focal", "cb_softmax", "cb_focal", "ldam_drw"}
        | {"balanced_softmax", "prior_ce", "lade", "la_loss", "vs", "seql"},
        "augmentation": {"mixup", "randaugment", "mislas", "rsg", "range_loss"},
        "optimisation": {"sam"},
        "two-stage": {"crt", "lws", "tau_norm", "knn", "disalign", "gcl", "gcl_2nd"}
        | {"crt_flex_rs", "gcl_flex_rs", "gcl_2nd_cb"},
        "post-hoc": {"la_posthoc"},
        "causal": {"de_confound"},
        "experts": {"bbn", "sade", "ride"},
    }
    for group, names in monica.items():
        for name in names:
            assert METHODS[name].group == group, name
    for m in METHODS.values():  # every second stage names a registered first stage
        assert (m.stage == 2) == (m.start_from is not None), m.name
        assert m.start_from is None or m.start_from in METHODS


def test_method_options_defaults_and_errors():
    assert method_options("mixup") == {"mixup_alpha": 1.0, "sampler": "instance"}
    assert method_options("mislas") == {"shift_bn": True, "sampler": "class_balanced"}
    assert method_options("flex_rs", flex_mode="class") == {"flex_mode": "class", "sampler": "flex"}
    assert method_options("sam", num_epochs=3)["scheduler"] == "cosine"
    assert isinstance(get_loss("mixup", COUNTS, mixup_alpha=0.5), L.CrossEntropy)
    with pytest.raises(ConfigError, match=r"'mixup' takes no option rho; its options: \['mixup_alpha', 'sampler'\]"):
        method_options("mixup", rho=0.1)
    with pytest.raises(ConfigError, match="needs num_epochs"):
        get_loss("ride", COUNTS)
    with pytest.raises(ConfigError, match="unknown long-tail method 'rgs'; valid: erm, rs, "):
        get_loss("rgs", COUNTS)


# ---------------------------------------------------------------- re-sampling


def test_flex_sampler_mass_follows_inverse_recall():
    recall = np.array([0.9, 0.5, 0.0, 0.2])  # 0 is clamped to 0.01
    r = np.maximum(recall, 0.01)
    mass = np.asarray(COUNTS) / r
    np.testing.assert_allclose(class_probabilities("flex", COUNTS, recall=recall), mass / mass.sum())
    np.testing.assert_allclose(
        class_probabilities("flex", COUNTS, recall=recall, flex_mode="class"), (1 / r) / (1 / r).sum()
    )
    s = get_sampler("flex_rs", LABELS, COUNTS, seed=0)
    np.testing.assert_allclose(s.instance_weights(), np.full(70, 1 / 70))  # before any validation: ERM
    s.set_recall(recall)
    w = s.instance_weights()
    np.testing.assert_allclose(w, (1 / r)[LABELS] / (1 / r)[LABELS].sum())  # instance weight ~ 1/recall_y
    fresh = get_sampler("flex_rs", LABELS, COUNTS, seed=0)
    fresh.load_state_dict(s.state_dict())
    assert list(fresh) == list(s)
    with pytest.raises(ConfigError, match="flex_mode"):
        get_sampler("flex_rs", LABELS, COUNTS, flex_mode="both")


def test_paired_sampler_pairs_two_independent_draws():
    u = get_sampler("instance", LABELS, COUNTS, seed=2, num_samples=4000)
    r = get_sampler("reverse", LABELS, COUNTS, seed=3, num_samples=4000)
    pairs = list(PairedSampler(u, r))
    assert [p[0] for p in pairs] == list(u) and [p[1] for p in pairs] == list(r)
    rev = np.bincount(LABELS[[p[1] for p in pairs]], minlength=4) / 4000
    mass = 40 / np.asarray(COUNTS)
    np.testing.assert_allclose(rev, mass / mass.sum(), atol=0.03)


# ---------------------------------------------------------------- augmentation


def test_mixup_lambda_one_is_ce_and_mixed_value():
    z, y = tt(Z), tt(Y, torch.int64)
    ce = get_loss("mixup", COUNTS)
    x = torch.arange(10.0).reshape(5, 2)
    mixed, perm, lam = mixup_batch(x, lam=1.0)
    assert torch.equal(mixed, x) and lam == 1.0
    assert float(mixup_loss(ce, z, y, perm, 1.0)) == pytest.approx(np_ce(Z, Y), rel=1e-6)
    mixed, perm, lam = mixup_batch(x, lam=0.3)
    p = perm.numpy()
    np.testing.assert_allclose(mixed.numpy(), 0.3 * x.numpy() + 0.7 * x.numpy()[p], rtol=1e-6)
    expected = 0.3 * np_ce(Z, Y) + 0.7 * np_ce(Z, Y[p])
    assert float(mixup_loss(ce, z, y, perm, 0.3)) == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    lams = [mixup_batch(x)[2] for _ in range(400)]  # Beta(1, 1) = uniform on [0, 1]
    assert np.mean(lams) == pytest.approx(0.5, abs=0.05) and min(lams) >= 0 and max(lams) <= 1


def test_randaugment_operations_follow_torchvision_magnitudes():
    ra = RandAugment(num_ops=2, magnitude=9)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    # Solarize threshold 255 (1 - 9/30) = 178.5: pixels >= it are inverted
    sol = np.asarray(ra.apply_op(img, "Solarize"))
    np.testing.assert_array_equal(sol, np.where(a >= 178.5, 255 - a, a))
    # Posterize bits 8 - round(9 / 7.5) = 7: the lowest bit cleared
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "Posterize")), a & 0b11111110)
    # TranslateX by int(150/331 * 32 * 9/30) = 4 pixels (to the right; sign flips to the left)
    shifted = np.asarray(ra.apply_op(img, "TranslateX"))
    np.testing.assert_array_equal(shifted[:, 4:], a[:, :-4])
    np.testing.assert_array_equal(shifted[:, :4], 0)
    left = np.asarray(ra.apply_op(img, "TranslateX", negative=True))
    np.testing.assert_array_equal(left[:, :-4], a[:, 4:])
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "Identity")), a)
    # ShearX by 0.3 * 9/30 = 0.09 about the origin: row y moves by about 0.09 y pixels, row 0 stays
    sheared = np.asarray(ra.apply_op(img, "ShearX"))
    np.testing.assert_array_equal(sheared[0], a[0])
    assert not np.array_equal(sheared[-1], a[-1])
    batch = torch.from_numpy(np.stack([a, a[::-1].copy()])).permute(0, 3, 1, 2)
    torch.manual_seed(0)
    out = ra(batch)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    with pytest.raises(ConfigError, match="magnitude"):
        RandAugment(magnitude=31)


def test_range_loss_against_formula():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0], [9.0, 9.0]])
    y = np.array([0, 0, 0, 1, 1, 2])
    z = np.tanh(np.arange(18.0).reshape(6, 3) / 7)
    # class 0 pairwise distances 5, 1, sqrt(18); top-2 = 5, sqrt(18); class 1: only 1; class 2: no pair
    intra = 2 / (1 / 5 + 1 / np.sqrt(18)) + 1 / (1 / 1.0)
    mu = np.array([f[y == c].mean(0) for c in range(3)])
    d2 = min(((mu[i] - mu[j]) ** 2).sum() for i in range(3) for j in range(i + 1, 3))
    inter = max(0.0, 0.1 - d2)  # far apart: 0
    loss = L.RangeLoss([3, 2, 1])
    got = float(loss(tt(z), tt(y, torch.int64), features=tt(f)))
    assert got == pytest.approx(np_ce(z, y) + 0.001 * (0.5 * intra + 0.5 * inter), rel=1e-5)  # lambda_R 0.001
    close = L.RangeLoss([3, 2, 1], margin=100.0, lambda_r=1.0)  # the inter term is active
    got = float(close(tt(z), tt(y, torch.int64), features=tt(f)))
    assert got == pytest.approx(np_ce(z, y) + 0.5 * intra + 0.5 * (100 - d2), rel=1e-5)
    legacy = L.RangeLoss([3, 2, 1], legacy=True)  # the anchor: range term on the logits, no CE
    assert float(legacy(tt(z), tt(y, torch.int64))) == pytest.approx(
        float(loss.range_term(tt(z), tt(y, torch.int64))), rel=1e-6
    )
    with pytest.raises(ConfigError, match="needs the batch features"):
        loss(tt(z), tt(y, torch.int64))


# ---------------------------------------------------------------- optimisation


def test_sam_gradient_is_taken_at_the_perturbed_weights():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model = nn.Linear(3, 3, bias=False)
    w0 = model.weight.detach().double().numpy().copy()
    xn = x.double().numpy()

    def grad_np(w):  # d/dW mean CE(x W^T, y) = (softmax - onehot)^T x / B
        p = np.exp(np_logsoftmax(xn @ w.T))
        return (p - np.eye(3)[y.numpy()]).T @ xn / 6

    g = grad_np(w0)
    w_adv = w0 + 0.05 * g / np.linalg.norm(g)
    surrogate = sam_surrogate(model, lambda: F.cross_entropy(model(x), y), rho=0.05)
    np.testing.assert_allclose(model.weight.detach().numpy(), w0, atol=1e-7)  # weights restored
    surrogate.backward()
    np.testing.assert_allclose(model.weight.grad.numpy(), grad_np(w_adv), rtol=1e-4, atol=1e-6)
    assert float(surrogate.detach()) == pytest.approx(np_ce(xn @ w_adv.T, y.numpy()), rel=1e-5)


def test_sam_rho_schedule_relative_to_epochs():
    assert [sam_rho(e, 90) for e in (0, 5, 6, 60, 61, 89)] == [0.05, 0.05, 0.1, 0.1, 0.5, 0.5]
    assert [sam_rho(e, 18) for e in (0, 1, 2, 12, 13)] == [0.05, 0.05, 0.1, 0.1, 0.5]


def test_sam_keeps_bn_running_stats_of_the_first_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    ref = nn.BatchNorm1d(4)
    ref.load_state_dict(model[1].state_dict())
    with torch.no_grad():
        ref(model[0](x))  # one update, from the unperturbed weights
    sam_surrogate(model, lambda: F.cross_entropy(model(x), y), rho=0.1)
    torch.testing.assert_close(model[1].running_mean, ref.running_mean)
    torch.testing.assert_close(model[1].running_var, ref.running_var)


# ---------------------------------------------------------------- heads


def test_ncm_against_formula():
    f = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [-1.0, 2.0], [4.0, 4.0]])
    y = np.array([0, 0, 1, 1, 2])
    head = get_classifier("ncm", 2, 3).fit(tt(f), tt(y, torch.int64))
    xh = f - f.mean(0)
    xh /= np.linalg.norm(xh, axis=1, keepdims=True)
    mu = np.array([xh[y == c].mean(0) for c in range(3)])
    q = np.array([[0.5, -1.0], [3.0, 0.2]])
    qh = (q - f.mean(0)) / np.linalg.norm(q - f.mean(0), axis=1, keepdims=True)
    expected = -(((qh[:, None, :] - mu[None]) ** 2).sum(-1))
    np.testing.assert_allclose(head(tt(q)).numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="every one of 3 classes"):
        get_classifier("ncm", 2, 3).fit(tt(f), tt([0, 0, 1, 1, 1], torch.int64))


def _np_causal(f, w, k, tau, gamma):
    fk = f.reshape(len(f), k, -1)
    wk = w.reshape(len(w), k, -1)
    fk = fk / np.linalg.norm(fk, axis=2, keepdims=True)
    wk = wk / (np.linalg.norm(wk, axis=2, keepdims=True) + gamma)
    return tau / k * np.einsum("bkd,ckd->bc", fk, wk), fk, wk


def test_de_confound_training_logits_ema_and_tde():
    torch.manual_seed(0)
    head = get_classifier("de_confound", 4, 3)
    w = head.weight.detach().double().numpy()
    f1, f2 = np.random.default_rng(1).normal(size=(2, 5, 4))
    head.train()
    z1 = head(tt(f1)).detach().numpy()
    expected, _, _ = _np_causal(f1, w, 2, 16.0, 1 / 32)
    np.testing.assert_allclose(z1, expected, rtol=1e-5, atol=1e-5)
    head(tt(f2))
    ema = 0.9 * (0.1 * f1.mean(0)) + 0.1 * f2.mean(0)
    np.testing.assert_allclose(head.embed_mean.numpy(), ema, rtol=1e-5, atol=1e-6)
    head.eval()
    q = np.random.default_rng(2).normal(size=(3, 4))
    logits, fk, wk = _np_causal(q, w, 2, 16.0, 1 / 32)
    d = ema.reshape(2, -1) / np.linalg.norm(ema.reshape(2, -1), axis=1, keepdims=True)
    cos = (fk * d[None]).sum(-1)  # B x K
    tde = logits - 1.5 * 16.0 / 2 * np.einsum("bk,ck->bc", cos, (wk * d[None]).sum(-1))
    np.testing.assert_allclose(head(tt(q)).detach().numpy(), tde, rtol=1e-4, atol=1e-4)
    head.alpha = 0.0  # alpha 0: test logits are the training logits
    np.testing.assert_allclose(head(tt(q)).detach().numpy(), logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="num_heads dividing"):
        get_classifier("de_confound", 5, 3)


def test_bbn_head_and_cumulative_alpha():
    torch.manual_seed(0)
    head = get_classifier("bbn", 3, 4)
    w, b = head.linear.weight.detach().numpy(), head.linear.bias.detach().numpy()
    fu, fr = np.random.default_rng(0).normal(size=(2, 5, 3))
    got = head.mix(tt(fu), tt(fr), 0.7).detach().numpy()
    np.testing.assert_allclose(got, np.hstack([1.4 * fu, 0.6 * fr]) @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        head(tt(fu)).detach().numpy(), np.hstack([fu, fu]) @ w.T + b, rtol=1e-5, atol=1e-6
    )
    assert bbn_alpha(0, 50) == 1.0
    assert bbn_alpha(49, 50) == pytest.approx(1 - 0.98**2) and bbn_alpha(49, 50) < 0.04
    alphas = [bbn_alpha(e, 50) for e in range(50)]
    assert alphas == sorted(alphas, reverse=True)


def test_mislas_head_trains_copied_fc_and_scales():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    head = get_classifier("mislas", 5, 4, linear=lin)
    assert sorted(n for n, p in head.named_parameters() if p.requires_grad) == [
        "linear.bias",
        "linear.weight",
        "scales",
    ]
    f = torch.randn(3, 5)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    torch.testing.assert_close(head(f), lin(f) * torch.tensor([1.0, 2.0, 0.5, 3.0]))


# ---------------------------------------------------------------- experts


def test_reversed_prior_and_sade_loss():
    pi_rev = L.reversed_prior(COUNTS).double().numpy()
    np.testing.assert_allclose(pi_rev, PRIOR[::-1], rtol=1e-6)
    shuffled = [8, 40, 2, 20]  # reversal by rank, not by position
    np.testing.assert_allclose(L.reversed_prior(shuffled).numpy(), np.array([20, 2, 40, 8]) / 70, rtol=1e-6)
    z = np.stack([Z, Z[:, ::-1], 0.5 * Z])
    expected = (
        np_ce(z[0], Y)
        + np_ce(z[1] + np.log(PRIOR), Y)
        + np_ce(z[2] + np.log(PRIOR) - 2 * np.log(PRIOR[::-1]), Y)
    )
    got = float(get_loss("sade", COUNTS)(tt(z), tt(Y, torch.int64)))
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="expert logits K x B x 4"):
        get_loss("sade", COUNTS)(tt(Z), tt(Y, torch.int64))


def test_ride_one_expert_without_diversity_is_ldam_drw():
    cos = np.tanh(Z)
    ride = get_loss("ride", COUNTS, num_epochs=10, lambda_div=0.0)
    ldam = get_loss("ldam_drw", COUNTS, num_epochs=10)
    for epoch in (0, 8):
        ride.set_epoch(epoch)
        ldam.set_epoch(epoch)
        got = float(ride(tt(30 * cos)[None], tt(Y, torch.int64)))
        assert got == pytest.approx(float(ldam(tt(cos), tt(Y, torch.int64))), rel=1e-5)


def test_ride_loss_against_formula():
    rng = np.random.default_rng(3)
    cos = np.tanh(rng.normal(size=(3, 5, 4)))
    q = np.asarray(COUNTS, float) ** -0.25
    m = 0.5 * q / q.max()
    n = np.asarray(COUNTS, float)
    cb = (1 - 0.9999) / (1 - 0.9999**n)
    cb = cb / cb.sum() * 4
    ride = get_loss("ride", COUNTS, num_epochs=10)
    for epoch, w, temp in ((0, None, np.ones(4)), (8, cb, None)):
        if temp is None:
            raw = 0.05 * 4 * PRIOR + 0.95
            temp = raw / raw.max()
        z = 30 * cos
        target = np.exp(np_logsoftmax(z.mean(0) / temp))
        expected = 0.0
        for zk in z:
            expected += np_ce(zk - 30 * np.eye(4)[Y] * m[Y][:, None], Y, w)
            logq = np_logsoftmax(zk / temp)
            kl = (target * (np.log(target) - logq)).sum() / 5
            expected -= 0.2 * temp.mean() ** 2 * kl
        ride.set_epoch(epoch)
        assert float(ride(tt(z), tt(Y, torch.int64))) == pytest.approx(expected, rel=1e-4), epoch


def test_expert_heads_mean_of_cosine_experts():
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(
        "resnet", embedding_size=4, hidden_sizes=[4, 8, 8, 12], depths=[1, 1, 1, 1], layer_type="basic"
    )
    backbone = AutoModel.from_config(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = backbone(pixel_values=x, output_hidden_states=True)
    heads, options = ExpertHeads.split_backbone(backbone, 12, 5)
    assert (
        options["split"] == 2 and len(backbone.encoder.stages) == 2 and backbone.config.hidden_sizes == [4, 8]
    )
    heads.eval()
    with torch.no_grad():
        fmap = backbone(pixel_values=x).last_hidden_state
        torch.testing.assert_close(fmap, full.hidden_states[2])  # the shared trunk is layers 1-2
        experts = heads.expert_logits(fmap)
        # each expert starts as a copy of the backbone's layers 3-4: its pooled features are the backbone's
        pooled = full.pooler_output.flatten(1)
        for k in range(3):
            w = heads.classifiers[k].weight
            expected = 30 * F.normalize(pooled, dim=1) @ F.normalize(w, dim=1).t()
            torch.testing.assert_close(experts[k], expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(heads(fmap), experts.mean(0))
    with pytest.raises(ConfigError, match="encoder.stages"):
        ExpertHeads.split_backbone(nn.Linear(2, 2), 2, 2)


# ---------------------------------------------------------------- RSG


def _rsg_inputs():
    from hubtools.longtail.augment import RSGModule

    torch.manual_seed(0)
    rsg = RSGModule(channels=3, num_classes=3, head_classes=1, n_center=2, contrastive_dim=4)
    with torch.no_grad():
        rsg.centres.copy_(torch.randn(3, 2, 3))
    maps = torch.randn(7, 3, 2, 2)
    y = torch.tensor([0, 0, 2, 0, 0, 1, 0])  # 5 head (class 0), 2 tail
    return rsg, maps, y


def _np_gamma(rsg, maps, y):
    pooled = maps.numpy().mean(axis=(2, 3))
    a, b = rsg.assign_weight.detach().numpy(), rsg.assign_bias.detach().numpy()
    s = np.einsum("bc,bck->bk", pooled, a[y.numpy()]) + b[y.numpy()]
    return np.exp(np_logsoftmax(s))


def test_rsg_cesc_against_formula():
    rsg, maps, y = _rsg_inputs()
    rsg.transfer = True  # no contrastive term once the transfer runs
    gamma = _np_gamma(rsg, maps, y)
    mu = rsg.centres.detach().numpy()[y.numpy()]  # B x K x ch
    dist = ((maps.numpy()[:, None] - mu[..., None, None]) ** 2).sum(axis=(2, 3, 4))
    expected = (gamma * dist).sum() / 7
    _, _, cesc, _ = rsg(maps, y)
    assert float(cesc.detach()) == pytest.approx(expected, rel=1e-5)
    rsg.transfer = False  # + CE of "same class?" on the pairs (i, i + 3)
    _, _, with_pairs, mv = rsg(maps, y)
    verdict = rsg.contrastive(torch.cat([maps[:3], maps[3:6]], dim=1)).detach().numpy()
    same = (y[:3] == y[3:6]).long().numpy()
    assert float(with_pairs.detach()) == pytest.approx(expected + np_ce(verdict, same), rel=1e-5)
    assert float(mv) == 0.0


def test_rsg_transfer_moves_head_variation_onto_tail_samples():
    rsg, maps, y = _rsg_inputs()
    rsg.transfer = True
    out, targets, _, mv = rsg(maps, y)
    head, tail = maps[y == 0], maps[y != 0]
    # 5 head >= 2 tail: int(5 / 2) = 2 rounds of 2 pairs, each appending both tail samples
    assert out.shape[0] == 11 and targets.tolist() == y.tolist() + [2, 1, 2, 1]
    torch.testing.assert_close(out[:7], maps)
    gamma = _np_gamma(rsg, maps, y)
    centres = rsg.centres.detach()
    k = torch.as_tensor(gamma.argmax(axis=1))
    nearest = centres[y, k][..., None, None]
    conv = rsg.transform
    sizes, aligns = [], []
    for j in range(2):
        h = head[2 * j : 2 * j + 2]
        v = h - nearest[y == 0][2 * j : 2 * j + 2]
        moved = F.conv2d(v, conv.weight, conv.bias, padding=1)
        torch.testing.assert_close(out[7 + 2 * j : 9 + 2 * j], tail + moved, rtol=1e-5, atol=1e-5)
        d = (tail - nearest[y != 0]).permute(0, 2, 3, 1).reshape(-1, 3).detach().numpy()
        mv_ = moved.permute(0, 2, 3, 1).reshape(-1, 3).detach().numpy()
        v_ = v.permute(0, 2, 3, 1).reshape(-1, 3).detach().numpy()
        sizes.append(np.abs(np.linalg.norm(mv_, axis=1) - np.linalg.norm(v_, axis=1)).sum())
        cos = (d * mv_).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(mv_, axis=1))
        aligns.append(np.abs(cos - 1).sum())
    verdicts = [
        rsg.contrastive(torch.cat([head[2 * j : 2 * j + 2], out[7 + 2 * j : 9 + 2 * j] - tail], dim=1))
        for j in range(2)
    ]
    ce = [np_ce(v.detach().numpy(), np.zeros(2, int)) for v in verdicts]
    expected = np.mean([ce[j] + (sizes[j] + aligns[j]) / 2 for j in range(2)])
    assert float(mv) == pytest.approx(expected, rel=1e-4)
    mv.backward()  # MV trains the transformation, not the contrastive module
    assert rsg.transform.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in rsg.contrastive.parameters())


def test_deferred_cb_sampler_switches_at_08_epochs():
    n = np.asarray(COUNTS, float)
    w = (1 - 0.9999) / (1 - 0.9999**n)
    for e in range(10):
        q = class_probabilities("deferred_cb", COUNTS, e, 10)
        expected = n * w / (n * w).sum() if e >= 8 else n / n.sum()
        np.testing.assert_allclose(q, expected, rtol=1e-6)


def test_bbn_separate_branches_start_as_the_last_stage():
    from transformers import AutoConfig, AutoModel

    from hubtools.longtail.experts import BBNBranchHead

    cfg = AutoConfig.for_model(
        "resnet", embedding_size=4, hidden_sizes=[4, 6], depths=[1, 1], layer_type="basic"
    )
    backbone = AutoModel.from_config(cfg).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full = backbone(pixel_values=x, output_hidden_states=True)
    head, options = BBNBranchHead.split_backbone(backbone, 6, 3)
    head.eval()
    assert options["split"] == 1
    with torch.no_grad():
        fmap = backbone(pixel_values=x).last_hidden_state
        f = full.pooler_output.flatten(1).numpy()
        w, b = head.linear.weight.numpy(), head.linear.bias.numpy()
        got = head.mix(fmap, fmap.flip(0), 0.8).numpy()
    np.testing.assert_allclose(got, np.hstack([1.6 * f, 0.4 * f[::-1]]) @ w.T + b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- optional extra: center loss


def test_center_loss_value_and_centre_update_against_formula():
    f = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    y = np.array([0, 0, 1, 1])
    z = np.tanh(np.arange(12.0).reshape(4, 3) / 5)
    loss = L.CenterLoss([5, 3, 1], lambda_c=0.5, alpha=0.5)
    got = float(loss(tt(z), tt(y, torch.int64), features=tt(f)))
    # centres start at 0: L_C = 1/2 mean ||f_i||^2
    assert got == pytest.approx(np_ce(z, y) + 0.5 * 0.5 * np.mean((f**2).sum(1)), rel=1e-6)
    # paper's rule: c_j -= alpha * sum_{y_i=j}(c_j - f_i) / (1 + n_j), from c = 0
    expected = np.zeros((3, 2))
    for j in range(3):
        members = f[y == j]
        expected[j] = 0 - 0.5 * (len(members) * 0 - members.sum(0)) / (1 + len(members))
    np.testing.assert_allclose(loss.centers.numpy(), expected, atol=1e-6)
    # second step uses the moved centres; eval mode leaves them alone
    got2 = float(loss(tt(z), tt(y, torch.int64), features=tt(f)))
    d = f - expected[y]
    assert got2 == pytest.approx(np_ce(z, y) + 0.5 * 0.5 * np.mean((d**2).sum(1)), rel=1e-6)
    loss.eval()
    before = loss.centers.clone()
    loss(tt(z), tt(y, torch.int64), features=tt(f))
    assert torch.equal(loss.centers, before)
    # the gradient wrt a feature is lambda_c * (f_i - c_{y_i}) / B
    feats = tt(f).requires_grad_(True)
    loss(tt(z), tt(y, torch.int64), features=feats).backward()
    np.testing.assert_allclose(feats.grad.numpy(), 0.5 * (f - before.numpy()[y]) / 4, atol=1e-6)


def test_center_loss_state_round_trips_into_a_fresh_loss():
    f, y = tt(np.random.default_rng(0).normal(size=(6, 4))), torch.tensor([0, 1, 2, 0, 1, 2])
    trained = L.CenterLoss([3, 2, 1])
    trained(torch.zeros(6, 3), y, features=f)
    fresh = L.CenterLoss([3, 2, 1])  # centres not sized yet: loading takes the saved size
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.centers, trained.centers) and fresh.centers.shape == (3, 4)
    with pytest.raises(ConfigError, match="needs the batch features"):
        trained(torch.zeros(6, 3), y)
