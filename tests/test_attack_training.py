"""Attacker training against a small trained f_seg on a tiny phantom."""

import threading

import numpy as np
import pytest
import torch

from napari_advseg.errors import InvalidInputError
from napari_advseg.inference import to_model_grid
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.training import losses
from napari_advseg.training.attack_trainer import (
    AttackTrainer,
    AttackTrainingConfig,
)
from napari_advseg.training.attacker_io import load_attacker
from napari_advseg.training.events import AttackProgress, StepCompleted, TrainingFinished

SMALL = AttackerConfig(latent_dim_d=4, latent_dim_v=4, base_channels=8, depth=3, output_stride=2)


def quick(**overrides):
    settings = dict(
        steps=4,
        batch_size=4,
        crop_size=64,
        critic_steps=2,
        monitor_every=2,
        checkpoint_every=2,
        device="cpu",
    )
    settings.update(overrides)
    return AttackTrainingConfig(**settings)


def test_events_keep_f_seg_frozen_and_checkpoint(seg_model, cohort, tmp_path):
    before = {k: v.clone() for k, v in seg_model.network.state_dict().items()}
    trainer = AttackTrainer(tmp_path / "att", seg_model, [cohort.subject(0)], SMALL, config=quick())
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, StepCompleted)]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert {
        "adversarial",
        "xi",
        "displacement",
        "intensity",
        "kl",
        "critic",
        "wasserstein",
        "masked_xent",
        "total",
    } <= set(steps[0].losses)
    progress = [e for e in events if isinstance(e, AttackProgress)]
    assert [e.step for e in progress] == [2, 4] and all(e.p >= 0 for e in progress)
    assert isinstance(events[-1], TrainingFinished)
    for key, value in seg_model.network.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and batch-norm statistics
    assert not any(p.requires_grad for p in seg_model.network.parameters())
    loaded = load_attacker(tmp_path / "att")
    assert loaded.config["training"]["step"] == 4
    assert loaded.config["target"]["weights_sha256"] == seg_model.config["weights_sha256"]
    assert loaded.config["attack"]["xi"] == 2.0


def test_stop_and_resume(seg_model, cohort, tmp_path):
    out = tmp_path / "att"
    trainer = AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=50))
    for event in trainer.run():
        if isinstance(event, StepCompleted) and event.step == 2:
            stopper = threading.Thread(target=trainer.stop)  # as the widget's Stop does
            stopper.start()
            stopper.join()
        final = event
    assert final.stopped and final.step == 2
    resumed = AttackTrainer(
        out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=5), resume=True
    )
    steps = [e.step for e in resumed.run() if isinstance(e, StepCompleted)]
    assert steps[0] == final.step + 1 and steps[-1] == 5


def test_no_organ_to_attack(seg_model, cohort, tmp_path):
    empty = cohort.subject(0)
    y, x = np.indices(empty.image.shape[1:])
    body = ((y - 32) / 26) ** 2 + ((x - 32) / 30) ** 2 < 1
    empty.image[:] = np.where(body, -100.0, -1000.0)  # a body of fat, no organ
    with pytest.raises(InvalidInputError, match="nothing to attack"):
        list(AttackTrainer(tmp_path / "a", seg_model, [empty], SMALL, config=quick()).run())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diversity_term_makes_latent_draws_differ(seg_model, cohort, seed):
    """Ascent on the diversity term makes two latent draws give more different D and V.

    float64, eval mode, fixed draws and one short step: the first-order term decides, so the
    outcome does not depend on how a longer training would go on this CPU.
    """
    images = to_model_grid(cohort.subject(1), seg_model.spec).images[4:8].double()
    torch.manual_seed(seed)
    attacker = Attacker(SMALL).double().eval()
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight, std=0.01)  # |x|' is 0 at 0: leave the identity

    def differences() -> tuple[torch.Tensor, torch.Tensor]:
        encoding = attacker.encode(images)
        first, second = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        z_a = attacker.sample_latents(encoding.posterior, "prior", 1.0, first)
        z_b = attacker.sample_latents(encoding.posterior, "prior", 1.0, second)
        a = attacker.decode(encoding, images, *z_a)
        b = attacker.decode(encoding, images, *z_b)
        d = losses.diversity(a.displacement, b.displacement, z_a[0], z_b[0], 0.5)
        v = losses.diversity(a.intensity, b.intensity, z_a[1], z_b[1], 0.05)
        return d, v

    start_d, start_v = differences()
    _descend(attacker, -(start_d + start_v))
    with torch.no_grad():
        after_d, after_v = differences()
    assert float(after_d) > float(start_d.detach()), (start_d, after_d)
    assert float(after_v) > float(start_v.detach()), (start_v, after_v)


def test_diversity_term_in_training_stays_in_its_bounds(seg_model, cohort, tmp_path):
    config = quick(diversity_weight=0.5)
    events = AttackTrainer(tmp_path / "att", seg_model, [cohort.subject(0)], SMALL, config=config)
    steps = [e for e in events.run() if isinstance(e, StepCompleted)]
    # Two capped terms, D's and V's, each in [0, 1], weighted by 0.5 and negated: [-1, 0].
    assert all(-1.0 <= e.losses["diversity"] <= 0.0 for e in steps)
    assert any(e.losses["diversity"] < 0.0 for e in steps)


def _float64_attack(seg_model, cohort, seed):
    """The stored f_seg and a random attacker in float64, eval mode, posterior-mean latents."""
    seg_model.network.double()
    images = to_model_grid(cohort.subject(1), seg_model.spec).images[4:8].double()
    torch.manual_seed(seed)
    attacker = Attacker(SMALL).double().eval()
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight, std=0.1)  # D and V away from zero
    with torch.no_grad():
        s0 = torch.softmax(seg_model.logits(images), dim=1)

    def forward():
        encoding = attacker.encode(images)
        z_d, z_v = attacker.sample_latents(encoding.posterior, "mean")
        output = attacker.decode(encoding, images, z_d, z_v)
        reference = losses.segmentation_reference(s0, output.displacement)
        xent = losses.masked_cross_entropy(reference, seg_model.logits(output.image))
        return output, xent

    return attacker, forward


def _descend(attacker, loss, size=1e-4):
    """One gradient-descent step of fixed length ``size`` in parameter space."""
    parameters = [p for p in attacker.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    pairs = [(p, g) for p, g in zip(parameters, grads, strict=True) if g is not None]
    norm = torch.sqrt(sum((g**2).sum() for _, g in pairs))
    with torch.no_grad():
        for parameter, grad in pairs:
            parameter -= size * grad / norm
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("above", [True, False])
def test_xi_term_moves_the_cross_entropy_toward_xi(seg_model, cohort, seed, above):
    """Eq. 4 is what sets how far f_seg is pushed: descent on it moves f_xent toward xi.

    float64 and one short step: first order decides the sign, so no CPU's rounding can flip it.
    """
    attacker, forward = _float64_attack(seg_model, cohort, seed)
    _, xent = forward()
    start = float(xent.detach().mean())
    xi = start + 2.0 if above else 0.0
    pairs = _descend(attacker, losses.xi_loss(xent, xi))
    with torch.no_grad():
        _, after = forward()
    change = float(after.mean()) - start
    assert (change > 0) == above, (start, change)
    assert abs(change) > 1e-7, change  # well above float64 noise: the gradient reached D and V
    heads = {attacker.decoder_d.head.weight, attacker.decoder_v.head.weight}
    assert all(float(g.abs().sum()) > 0 for p, g in pairs if any(p is h for h in heads))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_penalties_shrink_d_and_v(seg_model, cohort, seed):
    """Eq. 2's penalties alone shrink both fields (lambda_D = 0.1, lambda_V = 0.01)."""
    attacker, forward = _float64_attack(seg_model, cohort, seed)
    output, _ = forward()
    before = tuple(float(f.detach().pow(2).mean()) for f in (output.displacement, output.intensity))
    penalty = losses.displacement_penalty(output.displacement, 0.1) + losses.intensity_penalty(
        output.intensity, 0.01
    )
    _descend(attacker, penalty, size=1e-3)
    with torch.no_grad():
        output, _ = forward()
    after = (output.displacement.pow(2).mean().item(), output.intensity.pow(2).mean().item())
    assert after[0] < before[0] and after[1] < before[1], (before, after)
