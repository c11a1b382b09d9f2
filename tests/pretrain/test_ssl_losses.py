"""DINO / iBOT / KoLeo / masking / EMA units, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hubtools.pretrain import (
    DINOHead,
    DINOLoss,
    IBOTPatchLoss,
    MultiCropAugmentation,
    PretrainConfig,
    SSLNetwork,
    SSLTeacher,
    koleo_loss,
    sample_masks,
    teacher_momentum,
    teacher_temperature,
)


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_dino_ce_equals_teacher_entropy_for_identical_logits() -> None:
    torch.manual_seed(0)
    loss = DINOLoss(out_dim=32, student_temp=0.1)
    z = torch.randn(2, 5, 32)
    probs = loss.softmax_center_teacher(z.flatten(0, 1), teacher_temp=0.1).view(2, 5, 32)
    same = torch.stack([z[1], z[0]])  # cross-view pairs: student view 1 sees teacher view 0's logits
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert torch.allclose(loss(same, None, probs), entropy, atol=1e-5)


def test_dino_loss_matches_numpy_over_all_pairs() -> None:
    rng = np.random.default_rng(1)
    n_g, n_l, b, k = 2, 3, 4, 16
    sg, sl, zt = rng.normal(size=(n_g, b, k)), rng.normal(size=(n_l, b, k)), rng.normal(size=(n_g, b, k))
    center = rng.normal(size=(1, k)) * 0.1
    loss = DINOLoss(out_dim=k, student_temp=0.1)
    loss.center.copy_(torch.from_numpy(center))
    probs = loss.softmax_center_teacher(torch.from_numpy(zt).flatten(0, 1).float(), 0.04).view(n_g, b, k)
    pt = np.exp(_np_log_softmax((zt - center) / 0.04))
    total, terms = 0.0, 0
    for i in range(n_g):
        for j in range(n_g):
            if i != j:
                total += -(pt[i] * _np_log_softmax(sg[j] / 0.1)).sum(-1).mean()
                terms += 1
        for j in range(n_l):
            total += -(pt[i] * _np_log_softmax(sl[j] / 0.1)).sum(-1).mean()
            terms += 1
    assert terms == n_g * n_l + n_g * (n_g - 1)
    got = loss(torch.from_numpy(sg).float(), torch.from_numpy(sl).float(), probs)
    assert abs(float(got) - total / terms) < 1e-4


def test_center_update_is_the_ema_formula() -> None:
    loss = IBOTPatchLoss(out_dim=8, center_momentum=0.9)
    c0 = torch.randn(1, 8)
    loss.center.copy_(c0)
    z = torch.randn(6, 8)
    loss.update_center(z)
    assert torch.allclose(loss.center, 0.9 * c0 + 0.1 * z.mean(0, keepdim=True), atol=1e-7)


def test_sinkhorn_knopp_rows_are_distributions_with_balanced_prototypes() -> None:
    torch.manual_seed(0)
    q = DINOLoss(out_dim=8).sinkhorn_knopp_teacher(torch.randn(64, 8) * 3, teacher_temp=1.0, n_iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), atol=1e-2)


def test_koleo_of_orthonormal_vectors() -> None:
    x = torch.eye(4) * 3.0  # normalised inside
    assert abs(float(koleo_loss(x)) + math.log(math.sqrt(2))) < 1e-6
    near = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0]])
    assert float(koleo_loss(near)) > float(koleo_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])))


def test_masks_follow_the_ratio_schedule() -> None:
    torch.manual_seed(0)
    grid = 16
    masks = sample_masks(8, grid, mask_probability=0.5, ratio_range=(0.1, 0.5))
    counts = masks.sum(1)
    assert masks.shape == (8, grid * grid) and int((counts > 0).sum()) == 4
    ratios = sorted(float(c) / grid**2 for c in counts if c > 0)
    assert all(0.05 <= r <= 0.55 for r in ratios), (
        ratios
    )  # block placement may stop short or overshoot a little
    assert ratios[-1] > ratios[0]


def test_ibot_normalises_by_all_images() -> None:
    torch.manual_seed(0)
    masks = torch.zeros(8, 9, dtype=torch.bool)
    masks[0, :3] = True
    masks[5, 4:] = True
    m = int(masks.sum())
    s, t = torch.randn(m, 10), torch.softmax(torch.randn(m, 10), -1)
    per_patch = -(t * torch.log_softmax(s / 0.1, -1)).sum(-1)
    expected = (per_patch[:3].mean() + per_patch[3:].mean()) / 8
    assert torch.allclose(IBOTPatchLoss(10, student_temp=0.1)(s, t, masks), expected, atol=1e-6)


def test_head_prototypes_are_unit_norm_and_freezable() -> None:
    head = DINOHead(16, out_dim=32, hidden_dim=8, bottleneck_dim=4)
    logits = head(torch.randn(3, 16))
    assert logits.abs().max() <= 1.0 + 1e-5  # cosine similarities
    head.freeze_prototypes = True
    head(torch.randn(3, 16)).sum().backward()
    assert head.prototypes.grad is not None and torch.count_nonzero(head.prototypes.grad) == 0
    assert torch.count_nonzero(head.mlp[0].weight.grad) > 0


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.trained = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.config = type("C", (), {"hidden_size": 4})()


def test_ema_updates_trainable_tensors_only() -> None:
    config = PretrainConfig(
        output_dir="unused", max_steps=1, head_out_dim=8, head_hidden_dim=4, head_bottleneck_dim=2
    )
    student = SSLNetwork(_Backbone(), DINOHead(4, 8, 4, 2))
    teacher = SSLTeacher(student, config)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    frozen_before = teacher.network.backbone.frozen.weight.clone()
    t_before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    teacher.update(student, momentum=1.0)
    assert all(torch.equal(t_before[k], v) for k, v in teacher.network.state_dict().items())
    teacher.update(student, momentum=0.0)
    assert torch.equal(teacher.network.backbone.trained.weight, student.backbone.trained.weight)
    assert torch.equal(teacher.network.head.prototypes, student.head.prototypes)
    assert torch.equal(teacher.network.backbone.frozen.weight, frozen_before)
    assert int(teacher.step) == 2 and not teacher.train().training


def test_schedules() -> None:
    assert teacher_momentum(0, 100) == pytest.approx(0.992) and teacher_momentum(100, 100) == pytest.approx(
        1.0
    )
    cfg = PretrainConfig(output_dir="x", max_steps=100)
    assert teacher_temperature(0, 100, cfg) == pytest.approx(0.04)
    assert teacher_temperature(15, 100, cfg) == pytest.approx(0.055)
    assert teacher_temperature(30, 100, cfg) == pytest.approx(0.07)


def test_multicrop_shapes_and_range() -> None:
    torch.manual_seed(0)
    images = (torch.rand(3, 3, 40, 40) * 255).to(torch.uint8)
    crops = MultiCropAugmentation(global_size=16, local_size=8, n_local=2)(images)
    assert crops.global_crops.shape == (6, 3, 16, 16) and crops.local_crops.shape == (6, 3, 8, 8)
    assert torch.isfinite(crops.global_crops).all()
    assert not torch.equal(crops.global_crops[:3], crops.global_crops[3:])  # two different views
