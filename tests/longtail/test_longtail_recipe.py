"""MONICA's training recipe and the defaults that must not be silent no-ops: the batch augmentation,
named recipes, ERM's shuffle without replacement, SEQL's few-group lambda, method combinations."""

import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hubtools.errors import ConfigError
from hubtools.longtail import losses as L
from hubtools.longtail.augment import RecipeAugment, hsv_to_rgb, rgb_to_hsv
from hubtools.longtail.methods import METHODS, get_loss, get_method, method_options
from hubtools.longtail.recipes import RECIPES
from hubtools.longtail.samplers import get_sampler
from hubtools.longtail.trainer import LongTailTrainConfig

COUNTS = [50, 20, 8, 3]
LABELS = np.repeat(np.arange(4), COUNTS)


def test_hsv_round_trip_matches_colorsys():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    hsv = rgb_to_hsv(x)
    ref = torch.tensor(
        [[colorsys.rgb_to_hsv(*x[b, :, i, j].tolist()) for i in range(4) for j in range(4)] for b in range(2)]
    )
    assert torch.allclose(hsv.permute(0, 2, 3, 1).reshape(2, 16, 3), ref, atol=1e-6)
    assert torch.allclose(hsv_to_rgb(hsv), x, atol=1e-6)


def test_augment_with_everything_off_is_the_identity():
    images = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    off = RecipeAugment(1.0, 0.0, False, False, 0.0, 0.0, 0.0, 0.0)
    assert torch.equal(off(images), images)


def test_augment_flips_are_exact_and_drawn_per_image():
    images = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    flips = RecipeAugment(1.0, 0.0, True, True, 0.0, 0.0, 0.0, 0.0)
    torch.manual_seed(3)
    out = flips(images)
    torch.manual_seed(3)
    theta = flips.geometry(16)
    for i in range(16):
        expected = images[i]
        if theta[i, 0, 0] < 0:
            expected = expected.flip(-1)
        if theta[i, 1, 1] < 0:
            expected = expected.flip(-2)
        assert torch.equal(out[i], expected)
    kinds = {(bool(t[0, 0] < 0), bool(t[1, 1] < 0)) for t in theta}
    assert len(kinds) > 1  # not one flip for the whole batch


def test_augment_crop_stays_inside_and_rotation_is_bounded():
    aug = RecipeAugment()
    torch.manual_seed(0)
    theta = aug.geometry(500)
    linear, shift = theta[:, :, :2], theta[:, :, 2]
    scale = torch.linalg.det(linear).abs().sqrt()
    assert torch.allclose(scale, torch.full_like(scale, 224 / 264), atol=1e-6)
    assert shift.abs().max() <= 1 - 224 / 264 + 1e-7
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0].abs(), linear[:, 0, 0].abs()))
    assert angle.max() <= 10.0 + 1e-4 and angle.max() > 8.0


def test_brightness_jitter_scales_each_image_by_one_factor_within_range():
    x = torch.full((64, 3, 4, 4), 0.5)
    aug = RecipeAugment(brightness=0.2, contrast=0.0, saturation=0.0, hue=0.0)
    torch.manual_seed(1)
    out = aug.jitter(x)
    factors = out[:, 0, 0, 0] / 0.5
    assert torch.all((factors >= 0.8 - 1e-6) & (factors <= 1.2 + 1e-6))
    assert torch.allclose(out, factors[:, None, None, None] * 0.5)
    assert factors.std() > 0.05


def test_recipe_fills_unset_fields_and_explicit_values_win():
    cfg = LongTailTrainConfig(dataset="x", recipe="monica")
    for key, value in RECIPES["monica"].items():
        assert getattr(cfg, key) == value
    small = LongTailTrainConfig(dataset="x", recipe="monica", image_size=16, num_epochs=3)
    assert (small.image_size, small.num_epochs, small.lr, small.augmentation) == (16, 3, 3e-4, "monica")
    assert LongTailTrainConfig(dataset="x", recipe="plain").augmentation == "none"
    assert LongTailTrainConfig(dataset="x").augmentation == "monica"
    with pytest.raises(ValueError, match="unknown long-tail recipe 'nope'; valid: monica, plain"):
        LongTailTrainConfig(dataset="x", recipe="nope")
    with pytest.raises(ValueError, match="augmentation must be one of"):
        LongTailTrainConfig(dataset="x", augmentation="heavy")


def test_erm_sees_every_image_once_per_epoch_in_a_new_order():
    orders = []
    for epoch in (0, 1):
        idx = get_sampler("instance", LABELS, COUNTS, epoch=epoch, seed=2).all_indices()
        assert sorted(idx.tolist()) == list(range(LABELS.size))
        orders.append(idx.tolist())
    assert orders[0] != orders[1]
    # two processes: disjoint shards whose union is the epoch's permutation (padded by wrapping)
    shards = [list(get_sampler("instance", LABELS, COUNTS, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    union = shards[0] + shards[1]
    assert not set(shards[0]) & set(shards[1]) - {union[-1]}  # 81 images: the 82nd draw wraps around
    assert sorted(set(union)) == list(range(LABELS.size)) and len(union) == LABELS.size + 1
    # re-balancing samplers still draw with replacement: class-balanced repeats tail images
    rs = get_sampler("rs", LABELS, COUNTS, seed=2).all_indices().tolist()
    assert len(set(rs)) < len(rs)


def test_seql_default_masks_exactly_the_few_group():
    loss = get_loss("seql", COUNTS, medium=2)
    assert loss.rare.tolist() == [False, False, True, True]
    with pytest.raises(ConfigError, match="needs medium="):
        get_loss("seql", COUNTS)
    with pytest.warns(UserWarning, match="no class has a prior below"):
        fixed = get_loss("seql", COUNTS, lambda_=4.3e-4)
    assert not fixed.rare.any()


def test_range_loss_default_weight_keeps_cross_entropy_in_charge():
    loss = get_loss("range_loss", COUNTS)
    assert loss.lambda_r == 0.001
    torch.manual_seed(0)
    logits, feats = torch.randn(12, 4), torch.randn(12, 8) * 3
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    expected = F.cross_entropy(logits, targets) + 0.001 * loss.range_term(feats, targets)
    assert torch.allclose(loss(logits, targets, features=feats), expected)


def test_sampler_option_combines_methods_and_unknown_samplers_fail():
    assert method_options("crt", sampler="flex_rs") == {"sampler": "flex", "flex_mode": "instance"}
    assert method_options("crt_flex_rs")["sampler"] == "flex"
    assert method_options("gcl_flex_rs")["sampler"] == "flex"
    assert method_options("erm")["sampler"] == "instance"
    with pytest.raises(ConfigError, match="unknown sampler 'often'"):
        method_options("crt", sampler="often")


def test_gcl_second_stage_cb_is_weighted_ce_on_scaled_cosines():
    loss = get_loss("gcl_2nd_cb", COUNTS).eval()  # eval: no Gaussian cloud, plain scaled cosines
    cos = torch.rand(6, 4) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 3, 2])
    w = L.class_balanced_weights(COUNTS)
    assert torch.allclose(loss(cos, y), F.cross_entropy(30 * cos, y, weight=w))
    assert get_method("gcl_2nd_cb").start_from == "gcl"


def test_sam_trains_longer_than_the_recipe():
    assert get_method("sam").epochs_scale == 1.8
    assert all(m.epochs_scale == 1.0 for n, m in METHODS.items() if n != "sam")


def test_augmentation_options_switch_off_label_changing_flips_and_are_checked():
    from hubtools.longtail.recipes import get_augmentation

    no_flip = get_augmentation("monica", hflip=False, vflip=False)
    torch.manual_seed(0)
    theta = no_flip.geometry(200)
    assert torch.all(torch.linalg.det(theta[:, :, :2]) > 0)  # no reflection among 200 draws
    cfg = LongTailTrainConfig(dataset="x", augmentation_options={"hflip": False})
    assert cfg.augmentation_options == {"hflip": False}
    with pytest.raises(ValueError, match=r"augmentation_options \['flip'\] unknown"):
        LongTailTrainConfig(dataset="x", augmentation_options={"flip": False})
    with pytest.raises(ValueError, match="augmentation 'none' takes no options"):
        LongTailTrainConfig(dataset="x", augmentation="none", augmentation_options={"hflip": False})
