"""The WGAN critic (issue 11, item 5): per-sample scores, a seeded gradient penalty, eval mode.

No test here decides its outcome by how well a network trains: the trainer runs only a step or
two with tiny settings, to watch what the critic is given.
"""

import pytest
import torch

from napari_advseg.errors import InvalidInputError
from napari_advseg.nets.critic import Critic, CriticConfig
from napari_advseg.training import attack_trainer, losses
from napari_advseg.training.attack_trainer import DEFAULT_CRITIC, AttackSteps, AttackTrainer
from napari_advseg.training.events import StepCompleted

from .test_attack_training import SMALL, quick


def tiny_critic(norm, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    critic = Critic(CriticConfig(base_channels=4, depth=3, norm=norm)).to(dtype)
    for parameter in critic.parameters():  # norm layers start at 1 and 0: make them matter
        torch.nn.init.normal_(parameter, std=0.3)
    return critic


@pytest.mark.parametrize("norm", ["layer", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_per_sample_critic_scores_an_image_alone(norm, train):
    critic = tiny_critic(norm).train(train)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 16, 16, generator=generator)
    others = torch.randn(5, 1, 16, 16, generator=generator)
    alone = critic(image)
    with_others = critic(torch.cat([image, others]))[:1]
    shifted = critic(torch.cat([image, others + 3.0]))[:1]  # a batch-wide shift of the others
    assert torch.allclose(alone, with_others, atol=1e-6)
    assert torch.allclose(alone, shifted, atol=1e-6)
    assert CriticConfig(norm=norm).per_sample


def test_batch_norm_critic_couples_the_batch():
    """The contrast: in train mode batch norm's score of one image depends on the others."""
    critic = tiny_critic("batch").train()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 16, 16, generator=generator)
    others = torch.randn(5, 1, 16, 16, generator=generator)
    first = critic(torch.cat([image, others]))[:1]
    second = critic(torch.cat([image, others + 3.0]))[:1]
    assert not torch.allclose(first, second, atol=1e-3)
    assert not CriticConfig(norm="batch").per_sample


def test_layer_norm_critic_layout_and_old_layouts():
    """Layer norm after every convolution but the first; "batch" and "none" keep the layout
    (parameter names) their checkpoints were saved with."""
    layer = Critic(CriticConfig(4, 3, "layer"))
    norms = [m for m in layer.features if isinstance(m, torch.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(1, 8), (1, 16)]
    assert set(Critic(CriticConfig(4, 3, "batch")).state_dict()) == {
        "features.0.weight",
        "features.2.weight",
        "features.3.weight",
        "features.3.bias",
        "features.3.running_mean",
        "features.3.running_var",
        "features.3.num_batches_tracked",
        "features.5.weight",
        "features.6.weight",
        "features.6.bias",
        "features.6.running_mean",
        "features.6.running_var",
        "features.6.num_batches_tracked",
        "score.weight",
        "score.bias",
    }
    assert set(Critic(CriticConfig(4, 3, "none")).state_dict()) == {
        f"features.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")
    } | {"score.weight", "score.bias"}
    assert CriticConfig.from_dict({"base_channels": 4, "depth": 3, "norm": "batch"}).norm == "batch"
    with pytest.raises(InvalidInputError, match="layer, none, batch"):
        CriticConfig(norm="instance")


def test_gradient_penalty_is_reproducible_with_a_seeded_generator():
    critic = tiny_critic("layer")
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)

    def penalty(seed):
        return losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(seed))

    assert torch.equal(penalty(3), penalty(3))
    assert not torch.equal(penalty(3), penalty(4))


def test_gradient_penalty_matches_finite_differences():
    """(||grad f(x_mix)|| - 1)^2 with the input gradient by central differences, in float64.

    The images are small enough (8 x 8) to difference every pixel, so the whole gradient norm
    is estimated, not a part of it.
    """
    critic = tiny_critic("layer", dtype=torch.float64).eval()
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    fake = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    penalty = losses.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(7), dtype=real.dtype)
    mixed = alpha * real + (1 - alpha) * fake
    step = 1e-6
    norms = []
    with torch.no_grad():
        for index in range(mixed.shape[0]):
            image = mixed[index : index + 1]
            grad = torch.zeros_like(image)
            for row in range(8):
                for col in range(8):
                    up, down = image.clone(), image.clone()
                    up[0, 0, row, col] += step
                    down[0, 0, row, col] -= step
                    grad[0, 0, row, col] = (critic(up) - critic(down)) / (2 * step)
            norms.append(float(grad.norm()))
    expected = sum((n - 1.0) ** 2 for n in norms) / len(norms)
    assert max(norms) > 0.0
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)


def test_default_critic_is_per_sample_and_batch_with_penalty_is_refused(
    seg_model, cohort, tmp_path
):
    assert DEFAULT_CRITIC.norm == "layer"
    volumes = [cohort.subject(0)]
    for penalty in (0.0, 10.0):  # clipping and gradient penalty alike
        trainer = AttackTrainer(
            tmp_path / f"a{penalty}",
            seg_model,
            volumes,
            SMALL,
            config=quick(gradient_penalty=penalty),
        )
        assert trainer.critic_config.per_sample
    with pytest.raises(InvalidInputError, match="gradient penalty") as error:
        AttackTrainer(
            tmp_path / "b",
            seg_model,
            volumes,
            SMALL,
            CriticConfig(norm="batch"),
            config=quick(gradient_penalty=10.0),
        )
    assert "\n" not in str(error.value)


class _Phase:
    """Which of the trainer's steps is running, set by wrapping its two step methods."""

    def __init__(self, monkeypatch):
        self.now = None
        for name, phase in (("train_critic", "critic"), ("train_generator", "generator")):
            original = getattr(AttackSteps, name)
            monkeypatch.setattr(AttackSteps, name, self._wrap(original, phase))

    def _wrap(self, original, phase):
        def wrapped(trainer, *args, **kwargs):
            self.now = phase
            try:
                return original(trainer, *args, **kwargs)
            finally:
                self.now = None

        return wrapped


def _spy_on_critic(monkeypatch):
    """Record (phase, critic.training, batch size) of every critic pass in the trainer."""
    phase = _Phase(monkeypatch)
    calls = []

    class SpiedCritic(Critic):
        def __init__(self, config):
            super().__init__(config)
            self.register_forward_hook(
                lambda module, inputs, _: calls.append(
                    (phase.now, module.training, inputs[0].shape[0])
                )
            )

    monkeypatch.setattr(attack_trainer, "Critic", SpiedCritic)
    return calls


@pytest.mark.parametrize("norm, penalty", [("layer", 10.0), ("none", 0.0), ("batch", 0.0)])
def test_critic_is_in_eval_mode_for_the_generator_step(
    seg_model, cohort, tmp_path, monkeypatch, norm, penalty
):
    calls = _spy_on_critic(monkeypatch)
    config = quick(steps=2, critic_steps=2, gradient_penalty=penalty, batch_size=3)
    trainer = AttackTrainer(
        tmp_path / "att", seg_model, [cohort.subject(0)], SMALL, CriticConfig(8, 3, norm), config
    )
    list(trainer.run())
    generator_calls = [c for c in calls if c[0] == "generator"]
    critic_calls = [c for c in calls if c[0] == "critic"]
    assert generator_calls and all(not training for _, training, _ in generator_calls)
    assert critic_calls and all(training for _, training, _ in critic_calls)
    # real and fake are scored in one pass (batch norm shares its statistics between them)
    assert {size for _, _, size in generator_calls} == {6}
    scored = [size for _, _, size in critic_calls if size == 6]
    assert len(scored) == 2 * 2  # one pass per critic step
    if penalty:  # the penalty's interpolates: one pass of 3 per critic step
        assert sorted(size for _, _, size in critic_calls if size != 6) == [3] * 4


def test_resume_keeps_the_recorded_critic(seg_model, cohort, tmp_path):
    """A checkpoint's critic (its norm included) is what a resumed run builds, unless told."""
    out = tmp_path / "att"
    old = CriticConfig(8, 3, "none")  # as the shipped attackers were trained
    list(AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, old, quick(steps=1)).run())
    resumed = AttackTrainer(
        out, seg_model, [cohort.subject(0)], SMALL, config=quick(steps=2), resume=True
    )
    assert resumed.critic_config == old
    assert [e.step for e in resumed.run() if isinstance(e, StepCompleted)] == [2]
