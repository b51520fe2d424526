"""The U-Net trainer's speed options (issue 13): DataLoader workers, bf16 autocast, channels-last.

They change how a step runs, not what it computes: a run with workers is repeatable for its
number of workers, bf16 runs the forward pass in bfloat16, channels-last stores the network and
its inputs that way, and every checkpoint loads as any other.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from napari_advseg.errors import InvalidInputError
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import load_unet
from napari_advseg.training import seg_trainer
from napari_advseg.training.events import StepCompleted, TrainingFinished
from napari_advseg.training.seg_trainer import SegTrainer, SegTrainingConfig

from .conftest import blob_volume

TINY = UNetConfig(base_channels=4, depth=3)


def quick(**overrides) -> SegTrainingConfig:
    settings = dict(epochs=1, steps_per_epoch=3, batch_size=4, patch_size=24, device="cpu")
    settings.update(overrides)
    return SegTrainingConfig(**settings)


def _train(folder, **overrides) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The losses of a short run and its final weights."""
    volumes = [blob_volume(seed=i) for i in range(2)]
    trainer = SegTrainer(folder, volumes, [], TINY, config=quick(**overrides))
    events = list(trainer.run())
    assert isinstance(events[-1], TrainingFinished) and events[-1].reason is None
    losses = [e.losses["cross_entropy"] for e in events if isinstance(e, StepCompleted)]
    return losses, load_unet(events[-1].last_path)[0].network.state_dict()


def test_workers_make_the_batches_and_repeat_a_run(tmp_path):
    losses, weights = _train(tmp_path / "a", workers=2)
    again, weights_again = _train(tmp_path / "b", workers=2)
    alone, _ = _train(tmp_path / "c")
    assert len(losses) == 3
    assert losses == again
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    assert losses != alone  # the workers draw their own streams


class _Spy(UNet):
    """A U-Net that records its output's dtype, its weights' layout and their dtype."""

    seen: ClassVar[list[tuple[torch.dtype, bool, torch.dtype]]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = super().forward(images)
        if self.training:
            # a weight with several input channels (one channel is both layouts at once)
            weight = next(p for p in self.parameters() if p.dim() == 4 and p.shape[1] > 1)
            layout = weight.is_contiguous(memory_format=torch.channels_last)
            _Spy.seen.append((output.dtype, layout, next(self.parameters()).dtype))
        return output


@pytest.mark.parametrize("precision, channels_last", [("bf16", False), ("fp32", True)])
def test_bf16_and_channels_last_change_how_the_forward_pass_runs(
    tmp_path, monkeypatch, precision, channels_last
):
    _Spy.seen = []
    monkeypatch.setattr(seg_trainer, "UNet", _Spy)
    losses, weights = _train(tmp_path / "run", precision=precision, channels_last=channels_last)
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert _Spy.seen == [(expected, channels_last, torch.float32)] * 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(bool(torch.isfinite(v.float()).all()) for v in weights.values())


def test_speed_options_are_checked():
    with pytest.raises(InvalidInputError, match="precision 'fp16'"):
        quick(precision="fp16")
    with pytest.raises(InvalidInputError, match="workers"):
        quick(workers=-1)


def test_the_attacker_trains_under_bf16_and_channels_last_and_resumes_without(
    seg_model, cohort, tmp_path, monkeypatch
):
    from napari_advseg.nets.attacker import Attacker
    from napari_advseg.training import attack_trainer
    from napari_advseg.training.attack_trainer import AttackTrainer
    from napari_advseg.training.attacker_io import load_attacker

    from .test_attack_training import SMALL, quick

    seen = []

    class SpiedAttacker(Attacker):
        def decode(self, *args, **kwargs):
            output = super().decode(*args, **kwargs)
            weight = next(p for p in self.parameters() if p.dim() == 4 and p.shape[1] > 1)
            seen.append(
                (output.intensity.dtype, weight.is_contiguous(memory_format=torch.channels_last))
            )
            return output

    monkeypatch.setattr(attack_trainer, "Attacker", SpiedAttacker)
    out = tmp_path / "att"
    fast = quick(steps=1, precision="bf16", channels_last=True, gradient_penalty=10.0)
    events = list(AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, config=fast).run())
    assert events[-1].reason is None
    assert (torch.bfloat16, True) in seen  # the critic's fakes and the generator's pass
    assert all(layout for _, layout in seen)
    seen.clear()
    plain = quick(steps=2, gradient_penalty=10.0)  # precision and layout may change on resume
    events = list(
        AttackTrainer(out, seg_model, [cohort.subject(0)], SMALL, config=plain, resume=True).run()
    )
    assert events[-1].step == 2 and events[-1].reason is None
    assert seen and all(dtype == torch.float32 and not layout for dtype, layout in seen)
    assert load_attacker(out).attacker.config == SMALL


def test_hardening_takes_its_patches_from_workers_and_repeats(seg_model, cohort, tmp_path):
    from dataclasses import replace

    from napari_advseg.training.harden_trainer import HardenTrainer

    from .test_harden import ATTACKER, settings

    def losses(folder, workers):
        config, attack = settings(steps=2)
        trainer = HardenTrainer(
            folder,
            seg_model,
            [cohort.subject(0), cohort.subject(1)],
            (),
            replace(config, workers=workers),
            attack,
            ATTACKER,
        )
        events = list(trainer.run())
        assert events[-1].reason is None
        return [e.losses["seg_cross_entropy"] for e in events if isinstance(e, StepCompleted)]

    with_workers = losses(tmp_path / "a", 2)
    assert len(with_workers) == 2
    assert with_workers == losses(tmp_path / "b", 2)
    assert with_workers != losses(tmp_path / "c", 0)
