"""The attacker: warp, generator, critic, losses, training and checkpoints."""

import math

import pytest
import torch

from napari_advseg.errors import CheckpointError, InvalidInputError
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.nets.critic import Critic, CriticConfig
from napari_advseg.nets.warp import jacobian_determinant, warp
from napari_advseg.training import losses
from napari_advseg.training.attack_trainer import AttackTrainingConfig
from napari_advseg.training.attacker_io import export_attacker, load_attacker, save_attacker

TINY = AttackerConfig(latent_dim_d=3, latent_dim_v=2, base_channels=4, depth=3, output_stride=2)


def test_zero_field_is_the_identity():
    image = torch.randn(2, 3, 9, 11)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 9, 11)), image, atol=1e-6)


def test_known_translation_moves_a_known_pattern():
    image = torch.zeros(1, 1, 12, 12)
    image[0, 0, 5, 6] = 1.0
    displacement = torch.zeros(1, 2, 12, 12)
    displacement[:, 0] = 2.0  # out(p) = image(p + 2 px in x): the dot moves 2 px left
    displacement[:, 1] = -1.0  # and 1 px down
    moved = warp(image, displacement)
    assert moved[0, 0, 6, 4] == pytest.approx(1.0)
    assert float(moved.sum()) == pytest.approx(1.0)
    half = warp(image, displacement * 0.5)  # bilinear: half a pixel splits the mass
    assert float(half.max()) < 1.0 and float(half.sum()) == pytest.approx(1.0, abs=1e-5)


def test_jacobian_marks_folding():
    assert torch.allclose(jacobian_determinant(torch.zeros(1, 2, 6, 6)), torch.ones(1, 4, 4))
    x = torch.arange(8.0).expand(8, 8)
    folding = torch.zeros(1, 2, 8, 8)
    folding[0, 0] = -2.0 * x  # x -> x - 2x: reverses the x axis
    assert bool((jacobian_determinant(folding) < 0).all())


@pytest.mark.parametrize("mode", ["dv", "d", "v"])
def test_modes_zero_the_other_field(mode):
    torch.manual_seed(0)
    attacker = Attacker(AttackerConfig(**{**TINY.to_dict(), "mode": mode})).eval()
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight, std=0.5)
    image = torch.randn(2, 1, 16, 16)
    output, _ = attacker(image, torch.Generator().manual_seed(0))
    assert output.displacement.shape == (2, 2, 16, 16) and output.intensity.shape == (2, 1, 16, 16)
    assert bool(output.displacement.abs().sum() == 0) == (mode == "v")
    assert bool(output.intensity.abs().sum() == 0) == (mode == "d")
    expected = warp(image, output.displacement) + output.intensity
    assert torch.allclose(output.image, expected)


@torch.no_grad()
def test_new_attacker_starts_at_the_identity():
    output, posterior = Attacker(TINY)(torch.randn(2, 1, 16, 16))
    assert float(output.displacement.abs().max()) == 0 and float(output.intensity.abs().max()) == 0
    assert posterior.mu_d.shape == (2, 3) and posterior.mu_v.shape == (2, 2)


def test_sampling_is_deterministic_per_seed():
    torch.manual_seed(0)
    attacker = Attacker(TINY).eval()
    posterior = attacker.encode(torch.randn(1, 1, 16, 16)).posterior

    def draw(source, seed):
        return attacker.sample_latents(posterior, source, 1.0, torch.Generator().manual_seed(seed))

    for source in ("posterior", "prior"):
        a, b, c = draw(source, 1), draw(source, 1), draw(source, 2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
    mean = draw("mean", 1)
    assert torch.equal(mean[0], posterior.mu_d)
    cold = attacker.sample_latents(posterior, "prior", 0.0, torch.Generator().manual_seed(1))
    assert float(cold[0].abs().max()) == 0.0
    with pytest.raises(InvalidInputError):
        attacker.sample_latents(posterior, "uniform")


def test_gradients_reach_encoder_and_both_decoders():
    torch.manual_seed(0)
    attacker = Attacker(TINY)
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight, std=0.1)
    output, posterior = attacker(torch.randn(2, 1, 16, 16), torch.Generator().manual_seed(0))
    loss = output.image.pow(2).mean() + losses.kl_divergence(posterior)
    loss.backward()
    for name in ("encoder", "decoder_d", "decoder_v", "head_d", "head_v"):
        module = getattr(attacker, name)
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_critic_scores_each_image():
    for norm in ("layer", "none", "batch"):
        assert Critic(CriticConfig(4, 3, norm))(torch.randn(3, 1, 32, 24)).shape == (3,)
    with pytest.raises(InvalidInputError):
        CriticConfig(norm="instance")


def test_loss_terms_by_hand():
    # Two pixels, background + one organ. S0: pixel a organ (p=1), pixel b half organ.
    reference = torch.tensor([[[[0.0, 0.5]], [[1.0, 0.5]]]])  # (1, 2, 1, 2)
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    # log-softmax: pixel a: [log .5, log .5]; pixel b: [log .75, log .25]
    ce_a = -math.log(0.5)
    ce_b = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    expected = (1.0 * ce_a + 0.5 * ce_b) / 1.5
    xent = losses.masked_cross_entropy(reference, logits)
    assert float(xent) == pytest.approx(expected, rel=1e-6)
    assert float(losses.xi_loss(xent, 2.0)) == pytest.approx((2.0 - expected) ** 2, rel=1e-6)
    displacement = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])  # lengths 5 and 0
    assert float(losses.displacement_penalty(displacement, 0.1)) == pytest.approx(0.1 * 25 / 2)
    intensity = torch.tensor([[[[1.0, 3.0]]]])
    assert float(losses.intensity_penalty(intensity, 0.01)) == pytest.approx(0.01 * 5.0)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    assert float(losses.generator_adversarial_loss(real, fake)) == pytest.approx(1.5)
    assert float(losses.critic_loss(real, fake)) == pytest.approx(-1.5)
    from napari_advseg.nets.attacker import Posterior

    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    posterior = Posterior(mu, logvar.mul(0.5).exp(), mu, logvar.mul(0.5).exp(), logvar, logvar)
    one = 0.5 * (1.0 + 0.0) + 0.5 * (2.0 - 1.0 - math.log(2.0))
    assert float(losses.kl_divergence(posterior)) == pytest.approx(2 * one, rel=1e-6)


def test_warped_reference_follows_the_deformation():
    s0 = torch.zeros(1, 2, 8, 8)
    s0[:, 0] = 1.0
    s0[0, :, 3, 3] = torch.tensor([0.0, 1.0])
    shift = torch.zeros(1, 2, 8, 8)
    shift[:, 0] = 1.0
    assert losses.segmentation_reference(s0, shift, "original") is s0
    moved = losses.segmentation_reference(s0, shift, "warped")
    assert float(moved[0, 1, 3, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        losses.segmentation_reference(s0, shift, "both")


def test_attacker_checkpoint_round_trip(tmp_path, tiny_unet):
    from napari_advseg.segmentation import SegmentationModel

    network, spec = tiny_unet
    seg = SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"})
    torch.manual_seed(0)
    attacker = Attacker(TINY)
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight)
    extra = {"critic/x": torch.ones(2)}
    folder = save_attacker(
        tmp_path / "att",
        attacker,
        seg,
        AttackTrainingConfig(xi=1.5),
        {"step": 3},
        extra_tensors=extra,
    )
    loaded = load_attacker(folder)
    assert loaded.xi == 1.5 and loaded.mode == "dv"
    assert loaded.config["target"]["weights_sha256"] == "abc"
    for key, value in attacker.state_dict().items():
        assert torch.equal(value, loaded.attacker.state_dict()[key]), key
    assert not any(p.requires_grad for p in loaded.attacker.parameters())
    assert loaded.target_mismatch(seg) is None
    other = SegmentationModel(network, spec, "other", {"weights_sha256": "def"})
    assert "trained against 'tiny'" in loaded.target_mismatch(other)
    shipped = export_attacker(folder, tmp_path / "shipped")
    assert load_attacker(shipped).config["training"] == {"step": 3}
    with pytest.raises(CheckpointError, match="'segmentation/unet' checkpoint"):
        from napari_advseg.segmentation import save_unet

        load_attacker(save_unet(tmp_path / "unet", network, spec))


def test_per_organ_target_by_hand():
    # Three classes; pixel a is organ 1, pixel b organ 2 (one-hot references).
    reference = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 3, 1, 2)
    logits = torch.zeros(1, 3, 1, 2)  # uniform: CE = log 3 everywhere
    per_organ, present = losses.organ_cross_entropy(reference, logits, min_pixels=1.0)
    assert torch.allclose(per_organ, torch.full((1, 2), math.log(3.0)))
    assert present.tolist() == [[True, True]]
    loss = losses.organ_xi_loss(per_organ, present, 2.0)
    assert float(loss) == pytest.approx((2.0 - math.log(3.0)) ** 2)
    _, absent = losses.organ_cross_entropy(reference, logits, min_pixels=2.0)
    assert float(losses.organ_xi_loss(per_organ, absent, 2.0)) == 0.0


def test_diversity_by_hand():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.stack([torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), 1.0)])
    z_a, z_b = torch.zeros(2, 4), torch.ones(2, 4)  # mean |dz| = 1
    # per image: 0.2 / (0.5 * 1) = 0.4, and 1.0 / 0.5 = 2 capped at 1; the batch mean is 0.7
    assert float(losses.diversity(a, b, z_a, z_b, cap=0.5)) == pytest.approx(0.7)
    assert float(losses.diversity(a, a, z_a, z_b, cap=0.5)) == 0.0
