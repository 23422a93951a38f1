"""Guidance learned into the network (guidance-free training, Chen et al. 2025): the network takes
beta = 1 / w as an input, training mixes its output with a gradient-free unconditional pass, and
sampling then draws a guided digit in one pass per step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_diffusion import train as train_module
from mnist_diffusion.config import DiffusionConfig, ModelConfig, TrainConfig, from_dict, preset, to_dict
from mnist_diffusion.sampling import DEFAULT_SPACING, Guidance, count_passes, generate, guided_at, make_timesteps
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import Trainer, diffusion_loss
from mnist_diffusion.unet import UNet
from test_bad_input import rewrite_header

from conftest import assert_one_line_error, fake_mnist, plain, run_cli

SCHEDULE = NoiseSchedule(DiffusionConfig(num_timesteps=50))


def guidance_net(seed: int = 0) -> UNet:
    """A tiny network with a guidance input, its zero-initialised layers (which hide the embedding
    at first) perturbed."""
    torch.manual_seed(seed)
    model = UNet(preset("tiny", guidance_input=True))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def test_beta_is_an_input_that_defaults_to_one() -> None:
    model, x, t, labels = guidance_net(), torch.randn(3, 1, 28, 28), torch.tensor([3, 20, 45]), torch.tensor([1, 5, 9])
    with torch.no_grad():
        plain = model(x, t, labels)
        torch.testing.assert_close(model(x, t, labels, torch.ones(3)), plain)
        assert not torch.allclose(model(x, t, labels, torch.full((3,), 0.5)), plain)


def test_a_network_without_the_input_refuses_a_beta() -> None:
    with pytest.raises(ValueError, match="no guidance input"):
        UNet(preset("tiny"))(torch.randn(1, 1, 28, 28), torch.tensor([1]), torch.tensor([0]), torch.ones(1))


def test_the_input_needs_labels_and_old_configs_load_without_it() -> None:
    with pytest.raises(ValueError, match="class-conditional"):
        preset("tiny", num_classes=0, guidance_input=True)
    saved = to_dict(preset("tiny"))
    del saved["guidance_input"]  # a checkpoint written before the field existed
    assert from_dict(ModelConfig, saved).guidance_input is False


def test_the_loss_mixes_the_guided_output_with_a_gradient_free_unconditional_pass() -> None:
    """Chen et al. 2025, eq. 9: the loss sees beta F(x, c, beta) + (1 - beta) sg[F(x, null, 1)]."""
    model = guidance_net().train()
    x0, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 1, 28, 28)
    t, labels, beta = torch.tensor([2, 10, 30, 49]), torch.tensor([0, 3, 7, 10]), torch.tensor([0.3, 0.5, 0.9, 1.0])
    loss = diffusion_loss(model, SCHEDULE, x0, labels, t, noise, guidance_beta=beta)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    x_t = SCHEDULE.q_sample(x0, t, noise)
    uncond = model(x_t, t, torch.full_like(labels, 10), torch.ones(4)).detach()
    b = beta.view(-1, 1, 1, 1)
    expected = (b * model(x_t, t, labels, beta) + (1 - b) * uncond - noise).pow(2).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_training_draws_beta_in_0_1_and_uses_1_where_the_label_is_dropped(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_loss = train_module.diffusion_loss

    def spy(model, schedule, x0, labels, t, noise, min_snr_gamma=0.0, guidance_beta=None):
        seen.append((labels.clone(), guidance_beta.clone()))
        return real_loss(model, schedule, x0, labels, t, noise, min_snr_gamma, guidance_beta)

    monkeypatch.setattr(train_module, "diffusion_loss", spy)
    images, labels = fake_mnist(64)
    config = TrainConfig(batch_size=32, max_steps=3, p_uncond=0.3, sample_every=1000, checkpoint_every=1000)
    Trainer(tmp_path / "run", preset("tiny", guidance_input=True), DiffusionConfig(num_timesteps=50), config,
            images=torch.from_numpy(images), labels=torch.from_numpy(labels.astype("int64")), device="cpu").run()
    assert len(seen) == 3
    labels_seen, betas = torch.cat([s[0] for s in seen]), torch.cat([s[1] for s in seen])
    dropped = labels_seen == 10
    assert dropped.any() and (~dropped).any()
    assert (betas[dropped] == 1).all()
    kept = betas[~dropped]
    assert (kept > 0).all() and (kept <= 1).all() and kept.std() > 0.15  # spread over (0, 1], not a constant


class BetaRecorder(torch.nn.Module):
    """A fake guidance-input network: records each call's batch size and beta."""

    def __init__(self) -> None:
        super().__init__()
        self.config = preset("tiny", guidance_input=True)
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def forward(self, x, t, labels, guidance_beta=None):
        self.calls.append((len(x), guidance_beta))
        return torch.zeros_like(x)


@pytest.mark.parametrize("guidance", [1.5, 3.0])
def test_guided_sampling_is_one_pass_per_step_at_beta_one_over_w(guidance: float) -> None:
    net, num, steps = BetaRecorder(), 5, 6
    settings = plain(guidance=guidance, steps=steps)
    generate(net, SCHEDULE, num, settings, labels=torch.arange(num))
    assert [size for size, _ in net.calls] == [num] * steps
    for _, beta in net.calls:
        torch.testing.assert_close(beta, torch.full((num,), 1 / guidance))
    assert count_passes(SCHEDULE, settings, Guidance(True, guidance, learned=True)) == steps


def test_weights_below_one_still_mix_two_branches() -> None:
    """beta = 1 / w only reaches w >= 1; w in (0, 1) leans towards the unconditional branch."""
    net, num, steps = BetaRecorder(), 3, 4
    settings = plain(guidance=0.5, steps=steps)
    generate(net, SCHEDULE, num, settings, labels=torch.arange(num))
    assert [(size, beta) for size, beta in net.calls] == [(2 * num, None)] * steps
    assert count_passes(SCHEDULE, settings, Guidance(True, 0.5, learned=True)) == 2 * steps


def test_a_guidance_interval_passes_beta_only_where_it_guides() -> None:
    net, num, steps, interval = BetaRecorder(), 2, 8, (0.2, 0.7)
    generate(net, SCHEDULE, num, plain(guidance=2.0, steps=steps, guidance_interval=interval),
             labels=torch.arange(num))
    timesteps = make_timesteps(50, steps, DEFAULT_SPACING["unipc"], SCHEDULE.log_snr)
    assert 0 < sum(guided_at(t, 50, interval) for t in timesteps.tolist()) < steps
    for t, (size, beta) in zip(timesteps.tolist(), net.calls, strict=True):
        assert size == num
        assert (beta is not None) == guided_at(t, 50, interval)


def test_train_and_sample_from_the_command_line(tmp_path: Path, mnist_root: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", str(run), "--preset", "tiny", "--guidance-free",
                           "--max-steps", "2", "--batch-size", "8", "--timesteps", "50",
                           "--data-root", str(mnist_root))
    assert code == 0, err
    checkpoint = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--digits", "0-9", "--per-digit", "1",
                           "--steps", "4", "--out", str(tmp_path / "grid.png"))
    assert code == 0, err
    assert "4 network passes per digit" in err
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_guidance_free_without_labels_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--guidance-free", "--unconditional",
                           "--max-steps", "1")
    assert_one_line_error(code, err, "--guidance-free needs class labels")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"guidance_input": "yes"}, "guidance_input must be true or false, got 'yes'"),
    ({"guidance_input": True}, "tensor 'model.guidance_mlp.0.weight' is missing"),  # weights lack it
    ({"guidance_input": True, "num_classes": 0}, "needs a class-conditional model"),
])
def test_a_header_lying_about_the_guidance_input_is_refused(change: dict, message: str, tmp_path: Path,
                                                            tiny_checkpoint: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite_header(tiny_checkpoint, tmp_path / "bad.safetensors",
                         lambda meta: meta["model_config"].update(change))
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, message)
