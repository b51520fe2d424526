"""The forms of eq. 5 (issue 11, item 2): a reference whose entropy D cannot raise.

None of these tests trains a network: the stored tiny U-Net (tests/data/tiny_unet) is f_seg
where one is needed, and D is set by hand.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from napari_advseg._resources import models_dir
from napari_advseg.errors import CheckpointError, InvalidInputError
from napari_advseg.evaluation.attack_eval import warp_labels
from napari_advseg.inference import to_model_grid
from napari_advseg.nets.warp import warp
from napari_advseg.training import losses
from napari_advseg.training.attack_settings import LEGACY_SETTINGS, AttackTrainingConfig
from napari_advseg.training.attack_trainer import AttackTrainer, dice_drop
from napari_advseg.training.attacker_io import load_attacker
from napari_advseg.training.events import StepCompleted

from .shipped import shipped_attacker
from .test_attack_training import SMALL, quick

PAD = 16
"""Air added around the phantom slices, so that shifted organs stay far from the border."""


def eq5_terms(s0, displacement, logits_dv, form):
    """The single-xi term (B,) and the per-organ terms (B, C) of ``form``."""
    reference = losses.eq5_reference(s0, displacement, "warped", form)
    single = losses.masked_cross_entropy(reference, logits_dv, form)
    per_organ, present = losses.organ_cross_entropy(reference, logits_dv, eq5=form)
    return single, per_organ, present


@pytest.fixture
def padded_slices(seg_model, cohort):
    """Four phantom slices on the model grid, padded with air, in float64; and f_seg."""
    seg_model.network.double()
    images = to_model_grid(cohort.subject(1), seg_model.spec).images[4:8].double()
    images = F.pad(images, (PAD,) * 4, value=float(images.min()))
    return seg_model, images


@pytest.mark.parametrize("form", ["hard", "kl"])
@pytest.mark.parametrize("shift", [(4, 0), (0, -8), (8, 4)])
def test_a_translation_by_the_stride_changes_nothing(padded_slices, form, shift):
    """A pure translation by a multiple of f_seg's stride, with V = 0, leaves eq. 5 as at D = 0.

    f_seg is translation-equivariant for such shifts away from the border, and the reference
    moves with the image: the attack changes nothing, so the loss term must not change either.
    """
    seg, images = padded_slices
    stride = seg.spec.input_multiple  # 2 ** (depth - 1) for the U-Net: 4
    assert all(s % stride == 0 for s in shift)
    with torch.no_grad():
        s0 = torch.softmax(seg.logits(images), dim=1)
    organs = s0.argmax(dim=1) > 0
    rows, cols = organs.any(dim=(0, 2)).nonzero(), organs.any(dim=(0, 1)).nonzero()
    size = images.shape[-1]
    margin = min(int(rows.min()), int(cols.min()), size - 1 - int(rows.max()))
    margin = min(margin, size - 1 - int(cols.max())) - max(abs(s) for s in shift)
    assert margin >= 16, margin  # organs at least 16 px from the border, after the shift too
    still = torch.zeros(images.shape[0], 2, *images.shape[2:], dtype=images.dtype)
    moved = still.clone()
    moved[:, 0], moved[:, 1] = shift
    intensity = torch.zeros_like(images)  # V = 0
    with torch.no_grad():
        at_rest = eq5_terms(s0, still, seg.logits(warp(images, still) + intensity), form)
        shifted = eq5_terms(s0, moved, seg.logits(warp(images, moved) + intensity), form)
    for before, after in zip(at_rest, shifted, strict=True):
        assert torch.allclose(before.double(), after.double(), atol=1e-4), (before, after)


def sharp_discs(size=48, sharpness=8.0):
    """(1, 5, size, size) confident probabilities of four discs (as a sure f_seg gives)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(size, size, dtype=torch.long)
    for label, (cy, cx) in enumerate([(14, 14), (14, 34), (34, 14), (34, 34)], start=1):
        labels[(y - cy) ** 2 + (x - cx) ** 2 < 8**2] = label
    logits = sharpness * F.one_hot(labels, 5).permute(2, 0, 1)[None].double()
    return torch.softmax(logits, dim=1)


def smooth_field(size=48, amplitude=1.5, seed=0):
    """(1, 2, size, size) smooth random displacement, sub-pixel almost everywhere."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 2, 6, 6, generator=generator, dtype=torch.float64)
    return amplitude * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def masked_entropy(reference):
    """The organ-masked mean entropy of a reference, as eq. 5 weights its pixels."""
    entropy = -(reference * torch.log(reference.clamp_min(1e-300))).sum(dim=1)
    mask = reference[:, 1:].sum(dim=1)
    return (mask * entropy).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


def test_a_blurring_d_earns_the_soft_term_without_fooling_f_seg():
    """With f_seg not fooled (S_DV = the reference), only the soft form rewards a blurring D.

    Soft: CE = H(ref) + KL, and the bilinear warp raises H(ref), so the term rises by the
    reference's entropy alone. KL: CE - H is 0 at S_DV = reference whatever D. Hard: the moved
    one-hot has no entropy, and a sure f_seg pays the same per pixel whatever D.
    """
    s0, field = sharp_discs(), smooth_field()
    still = torch.zeros_like(field)
    terms = {}
    for form in losses.EQ5_FORMS:
        terms[form] = []
        for displacement in (still, field):
            reference = losses.eq5_reference(s0, displacement, "warped", form)
            if form == "hard":
                unfooled = 8.0 * reference  # f_seg as sure as for S0, on the moved organs
                assert float(masked_entropy(reference)) == 0.0
            else:
                unfooled = torch.log(reference)  # S_DV = the reference exactly
            terms[form].append(float(losses.masked_cross_entropy(reference, unfooled, form)))
    soft_reference = losses.segmentation_reference(s0, field, "warped")
    entropy_rise = float(masked_entropy(soft_reference) - masked_entropy(s0))
    assert entropy_rise > 0.05, entropy_rise  # the blur raises the reference's entropy ...
    soft_rest, soft_blur = terms["soft"]
    assert soft_blur - soft_rest == pytest.approx(entropy_rise, abs=1e-9)  # ... and pays soft
    assert terms["kl"] == pytest.approx([0.0, 0.0], abs=1e-10)
    sure = -math.log(math.exp(8.0) / (math.exp(8.0) + 4.0))
    assert terms["hard"] == pytest.approx([sure, sure], rel=1e-9)


def test_soft_is_kl_plus_the_entropy_of_its_reference(padded_slices):
    """On f_seg's own outputs: soft - kl is exactly the masked entropy of the warped reference."""
    seg, images = padded_slices
    with torch.no_grad():
        s0 = torch.softmax(seg.logits(images), dim=1)
        field = smooth_field(images.shape[-1]).expand(images.shape[0], -1, -1, -1)
        logits = seg.logits(warp(images, field))
    reference = losses.segmentation_reference(s0, field, "warped")
    soft = losses.masked_cross_entropy(reference, logits, "soft")
    kl = losses.masked_cross_entropy(reference, logits, "kl")
    assert torch.allclose(soft - kl, masked_entropy(reference), atol=1e-9)
    assert bool((kl >= -1e-12).all())  # a KL is never negative


def test_hard_reference_has_no_gradient_to_d():
    """D reaches the hard term through S_DV only; the soft and KL references pass it on."""
    s0, field = sharp_discs(), smooth_field()
    logits = torch.randn(s0.shape, generator=torch.Generator().manual_seed(1), dtype=s0.dtype)
    displacement = field.clone().requires_grad_(True)
    hard = losses.eq5_reference(s0, displacement, "warped", "hard")
    assert not hard.requires_grad
    assert not losses.masked_cross_entropy(hard, logits, "hard").requires_grad
    per_organ, _ = losses.organ_cross_entropy(hard, logits, eq5="hard")
    assert not per_organ.requires_grad
    for form in ("kl", "soft"):
        reference = losses.eq5_reference(s0, displacement, "warped", form)
        (grad,) = torch.autograd.grad(
            losses.masked_cross_entropy(reference, logits, form).sum(), displacement
        )
        assert float(grad.abs().sum()) > 0, form


def test_kl_and_hard_by_hand():
    # Two pixels, background + one organ; pixel a sure organ, pixel b half organ.
    reference = torch.tensor([[[[0.0, 0.5]], [[1.0, 0.5]]]], dtype=torch.float64)
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]], dtype=torch.float64)
    ce_a = -math.log(0.5)
    ce_b = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    kl_b = ce_b - math.log(2.0)  # minus H(0.5, 0.5)
    kl = losses.masked_cross_entropy(reference, logits, "kl")
    assert float(kl) == pytest.approx((1.0 * ce_a + 0.5 * kl_b) / 1.5, rel=1e-12)
    soft = losses.masked_cross_entropy(reference, logits, "soft")
    assert float(soft) == pytest.approx((1.0 * ce_a + 0.5 * ce_b) / 1.5, rel=1e-12)
    s0 = reference.clone()
    s0[0, :, 0, 1] = torch.tensor([0.4, 0.6])  # pixel b's label: the organ
    hard = losses.eq5_reference(s0, torch.zeros(1, 2, 1, 2, dtype=s0.dtype), "original", "hard")
    assert hard.tolist() == [[[[0.0, 0.0]], [[1.0, 1.0]]]]
    assert float(losses.masked_cross_entropy(hard, logits, "hard")) == pytest.approx(
        (ce_a - math.log(0.25)) / 2, rel=1e-12
    )
    with pytest.raises(ValueError, match="eq5 must be one of"):
        losses.eq5_reference(s0, torch.zeros(1, 2, 1, 2), "warped", "blur")


def test_original_reference_is_not_moved():
    s0, field = sharp_discs(), smooth_field(amplitude=3.0)
    for form in losses.EQ5_FORMS:
        unmoved = losses.eq5_reference(s0, field, "original", form)
        assert torch.equal(
            unmoved, losses.eq5_reference(s0, torch.zeros_like(field), "original", form)
        )


def test_labels_move_as_in_the_evaluation():
    labels = sharp_discs().argmax(dim=1)
    field = smooth_field(amplitude=3.0).float()  # the evaluation's label maps are float32
    moved = losses.move_labels(labels, field, 5)
    assert torch.equal(moved, warp_labels(labels, field, 5))
    hard = losses.eq5_reference(sharp_discs().float(), field, "warped", "hard")
    assert torch.equal(hard.argmax(dim=1), moved)


def test_progress_decrease_follows_the_one_rule(seg_model):
    """The trainer's progress decrease: S0 against its labels, S_DV against them moved by D."""
    label_map = seg_model.spec.label_map
    labels = sharp_discs().argmax(dim=1)
    shift = torch.zeros(1, 2, 48, 48, dtype=torch.float64)
    shift[:, 0] = 4.0
    moved = losses.move_labels(labels, shift, 5)
    # f_seg segments the moved organs exactly: no decrease, though S_DV != S0.
    assert dice_drop(label_map, labels, moved, shift, 5) == dict.fromkeys(label_map.names, 0.0)
    # ... which the unmoved reference ("original") reads as a decrease.
    assert all(v > 0 for v in dice_drop(label_map, labels, moved, None, 5).values())
    # S_DV all background: Dice 0 after, a 100 % decrease; an organ in neither is None.
    empty = labels.masked_fill(labels == 4, 0)
    drop = dice_drop(label_map, empty, torch.zeros_like(labels), None, 5)
    assert [drop[name] for name in label_map.names] == [100.0, 100.0, 100.0, None]


def test_eq5_settings_new_default_hard_old_configs_soft():
    assert AttackTrainingConfig().eq5 == "hard"
    assert LEGACY_SETTINGS["eq5"] == "soft"
    for form in losses.EQ5_FORMS:
        config = AttackTrainingConfig(eq5=form)
        assert AttackTrainingConfig.from_dict(config.to_dict()) == config
    old = AttackTrainingConfig().to_dict()
    del old["eq5"]
    assert AttackTrainingConfig.from_dict(old).eq5 == "soft"
    assert AttackTrainingConfig.from_dict({"xi": 2.5}).eq5 == "soft"
    with pytest.raises(InvalidInputError) as error:
        AttackTrainingConfig(eq5="blur")
    assert "\n" not in str(error.value) and "eq5" in str(error.value)
    with pytest.raises(InvalidInputError):
        AttackTrainingConfig.from_dict({"xi": 2.0, "eq5": "blur"})


@pytest.mark.parametrize("mode", ["dv", "d", "v"])
def test_shipped_attackers_record_the_hard_form(mode):
    config = load_attacker(models_dir() / shipped_attacker(mode)).config
    assert config["attack"]["eq5"] == "hard"  # the rebuilt table's default form
    assert AttackTrainingConfig.from_dict(config["attack"]).eq5 == "hard"


def test_old_checkpoint_resumes_as_soft_only(seg_model, cohort, tmp_path):
    out = tmp_path / "att"
    first = AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=1))
    list(first.run())
    config = json.loads((out / "config.json").read_text())
    assert config["attack"]["eq5"] == "hard"
    del config["attack"]["eq5"]  # as a checkpoint written before the entry existed
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="eq5 'soft' -> 'hard'") as error:
        AttackTrainer(
            out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=2), resume=True
        )
    assert "\n" not in str(error.value)
    resumed = AttackTrainer(
        out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=2, eq5="soft"), resume=True
    )
    steps = [e.step for e in resumed.run() if isinstance(e, StepCompleted)]
    assert steps == [2]


def test_unknown_eq5_in_a_checkpoint_is_one_line(seg_model, cohort, tmp_path):
    out = tmp_path / "att"
    list(AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=1)).run())
    config = json.loads((out / "config.json").read_text())
    config["attack"]["eq5"] = "blur"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"attack\.eq5 must be one of hard, kl, soft"
    ) as error:
        load_attacker(out)
    assert "\n" not in str(error.value)


def test_the_optimisation_baseline_uses_the_hard_form_by_default(seg_model, cohort):
    from napari_advseg.evaluation.attacks import OptimizedAttack
    from napari_advseg.inference import to_model_grid

    images = to_model_grid(cohort.subject(4), seg_model.spec).images[10:12]
    attack = OptimizedAttack(seg_model, steps=2)
    assert attack.eq5 == "hard"
    displacement, intensity = attack(images)
    assert displacement.shape == (2, 2, *images.shape[-2:])
    assert intensity.shape == (2, 1, *images.shape[-2:])
    assert bool(torch.isfinite(displacement).all()) and bool(torch.isfinite(intensity).all())
    with pytest.raises(ValueError, match="eq5 must be one of"):
        OptimizedAttack(seg_model, eq5="blurry")
