"""Tests of the model zoo: the shared interface (every registered model), the registry, and the
architecture facts and behaviours specific to each family. Small widths keep it fast on CPU."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from blindspot.errors import BlindspotError
from blindspot.models import (
    ReconstructionModel,
    _registry,
    create_model,
    list_models,
    model_options,
    register_model,
)
from blindspot.models.pitfalls_ae import AE

# Small overrides per model (only those the model accepts are used, so new models still run).
SMALL = {
    "ae": {"width": 4, "d": 8},
    "spatial-ae": {"width": 4, "c": 2},
    "vqvae2": {"hidden": 16, "codes": 16, "code_dim": 8},
    "bench-ae": {"d": 8, "hidden": 32},
    "vae": {"d": 8, "hidden": 32},
    "memae": {"d": 8, "hidden": 32, "memory": 10},
    "ceae": {"d": 8, "hidden": 32, "erase": 6},
}
SIZES = [32, 64]
B = 3


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def small(name: str, size: int, **extra: object) -> ReconstructionModel:
    opts = model_options(name)
    kw = {k: v for k, v in {**SMALL.get(name, {}), **extra}.items() if k in opts}
    torch.manual_seed(0)
    return create_model(name, size=size, **kw)


def batch(size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, size, size, generator=g)


def residual(loss: str, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).abs() if loss == "l1" else (x - x_hat).square()


# ------------------------------------------------------------------------------------------
# the interface, for every registered model


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_interface_in_train_mode(name: str, size: int) -> None:
    model = small(name, size).train()
    assert isinstance(model, torch.nn.Module)
    x = batch(size)

    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()

    loss, parts = model.training_loss(x)
    assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
    assert isinstance(parts, dict) and {"total", "recon"} <= parts.keys()
    assert all(isinstance(v, float) for v in parts.values())
    assert parts["total"] == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    amap = model.anomaly_map(x)
    assert amap.shape == x.shape and not amap.requires_grad
    assert torch.isfinite(amap).all() and (amap >= 0).all()
    assert model.training  # anomaly_map restores the mode


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_eval_is_deterministic_and_map_is_the_loss_residual(name: str, size: int) -> None:
    model = small(name, size)
    x = batch(size)
    model.train()
    model.training_loss(x)  # move batch-norm statistics / codebooks away from their init
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
        assert torch.equal(y1, y2)
        assert torch.allclose(model.decode(model.encode(x)), y1, atol=1e-6)
    amap = model.anomaly_map(x)
    assert torch.equal(amap, model.anomaly_map(x))
    assert torch.allclose(amap, residual(model.loss, x, y1))
    assert not model.training


@pytest.mark.parametrize("name", list_models())
def test_both_losses(name: str) -> None:
    x = batch(32)
    for loss in ("l1", "mse"):
        model = small(name, 32, loss=loss).eval()
        assert model.config["loss"] == loss
        with torch.no_grad():
            y = model(x)
        assert torch.allclose(model.anomaly_map(x), residual(loss, x, y))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_config_round_trip(name: str, size: int) -> None:
    model = small(name, size).train()
    x = batch(size)
    model.training_loss(x)
    config = model.config
    assert config["name"] == name and config["size"] == size
    assert list(config)[1:] == list(model_options(name))
    rest = {k: v for k, v in config.items() if k != "name"}

    for clone in (create_model(name, **rest), create_model(**config)):
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in clone.state_dict().items()} == shapes
        clone.load_state_dict(model.state_dict())
        assert clone.config == config
        model.eval(), clone.eval()
        with torch.no_grad():
            assert torch.equal(clone(x), model(x))


def raises(message: str):  # -> a pytest.raises context manager
    """pytest.raises(BlindspotError) matching the whole one-sentence message exactly."""
    return pytest.raises(BlindspotError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize("name", list_models())
def test_validation(name: str) -> None:
    for size in (48, 16, 0, True, 64.0):
        with raises(f"{name}: size must be a power of two >= 32; got {size!r}."):
            create_model(name, size=size)
    with raises(f"{name}: loss must be 'l1' or 'mse'; got 'l2'."):
        create_model(name, loss="l2")
    if "d" in model_options(name):
        with raises(f"{name}: latent size d must be a positive integer; got 0."):
            create_model(name, d=0)
    model = small(name, 64)
    with raises(f"{name}: input must have shape (B, 1, 64, 64); got (2, 1, 32, 32)."):
        model(torch.zeros(2, 1, 32, 32))


def test_other_validation_messages() -> None:
    cases = [
        ("ae", {"d": 0}, "ae: latent size d must be a positive integer; got 0."),
        ("ae", {"size": 48}, "ae: size must be a power of two >= 32; got 48."),
        ("ae", {"width": 0}, "ae: width must be a positive integer; got 0."),
        ("spatial-ae", {"c": 0}, "spatial-ae: bottleneck channels c must be a positive integer; "
         "got 0."),
        ("vqvae2", {"decay": 1.0}, "vqvae2: decay must be a number in (0, 1); got 1.0."),
        ("vqvae2", {"codes": 0}, "vqvae2: codebook size codes must be a positive integer; got 0."),
        ("vqvae2", {"hidden": 1}, "vqvae2: hidden must be an integer >= 2; got 1."),
        ("vae", {"kl_weight": -1.0}, "vae: kl_weight must be a number in [0, inf); got -1.0."),
        ("memae", {"memory": 0}, "memae: number of memory slots memory must be a positive "
         "integer; got 0."),
        ("memae", {"shrink": 1.0}, "memae: shrink threshold shrink must be a number in [0, 1); "
         "got 1.0."),
        ("ceae", {"erase": 0}, "ceae: erase (square side in pixels) must be an integer in "
         "[1, size=64]; got 0."),
        ("ceae", {"erase": 65}, "ceae: erase (square side in pixels) must be an integer in "
         "[1, size=64]; got 65."),
        ("vae", {"eval_latent": "mode"}, "vae: eval_latent must be 'mean' or 'sample'; got 'mode'."),
        ("memae", {"addressing": "l2"}, "memae: addressing must be 'dot' or 'cosine'; got 'l2'."),
    ]
    for name, kwargs, message in cases:
        with raises(message):
            create_model(name, **kwargs)


# ------------------------------------------------------------------------------------------
# registry


def test_registry_lists_the_zoo_sorted() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"ae", "spatial-ae", "vqvae2", "bench-ae", "vae", "memae", "ceae"} <= set(names)


def test_unknown_model_suggests_the_closest() -> None:
    listed = ", ".join(list_models())
    with raises(f"unknown model 'aee'; registered: {listed}; did you mean 'ae'?"):
        create_model("aee")
    with pytest.raises(BlindspotError, match=r"^unknown model 'zzzzzz'; registered: .*\.$"):
        create_model("zzzzzz")


def test_bad_option_names_the_accepted_ones() -> None:
    with raises(
        "model 'ae' has no option 'dd' (did you mean 'd'?); accepted options: size, d, width, loss."
    ):
        create_model("ae", dd=3)
    with raises(
        "model 'bench-ae' has no options 'foo', 'bar'; accepted options: size, d, hidden, loss."
    ):
        create_model("bench-ae", foo=1, bar=2)
    with pytest.raises(TypeError):  # constructors take keywords only
        AE(64)  # type: ignore[misc]


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BlindspotError, match=r"^model name 'ae' is already registered\.$"):
        register_model("ae")(AE)
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @register_model("tiny-test")
    def tiny(*, size: int = 32, loss: str = "l1") -> AE:
        return AE(size=size, d=2, width=2, loss=loss)

    assert "tiny-test" in list_models()
    assert create_model("tiny-test", size=64).size == 64
    with pytest.raises(BlindspotError, match="already registered"):
        register_model("tiny-test")(tiny)
    with pytest.raises(BlindspotError, match="parameter 'kwargs' is not an explicit keyword"):
        register_model("sink")(lambda **kwargs: None)
    with pytest.raises(BlindspotError, match="declares name 'ae'"):
        register_model("other-ae")(AE)

    class Unnamed(AE):  # a class without its own name takes the registered one
        pass

    register_model("unnamed-ae")(Unnamed)
    assert create_model("unnamed-ae", size=32, width=2).config["name"] == "unnamed-ae"
    monkeypatch.undo()
    assert "tiny-test" not in list_models() and "unnamed-ae" not in list_models()


# ------------------------------------------------------------------------------------------
# architecture facts

# Parameter counts of the original implementations with the same shapes, untrained
# (docs: /work/shared/docs/protocols.md, "Fidelity facts"): the MIDL 2022 pitfalls code (dense AE,
# spatial AE, VQ-VAE-2; 256 px) and the MedIAnomaly benchmark code (AE, VAE, MemAE, CeAE; 64 px,
# hidden 1024). Neither original has a bias in its last layer.
ORIGINAL_PARAMETERS = [
    ("ae", {"d": 32}, 1_309_696),
    ("ae", {"d": 64}, 1_833_984),
    ("ae", {"d": 128}, 2_882_560),
    ("spatial-ae", {"c": 1}, 785_664),
    ("spatial-ae", {"c": 2}, 785_920),
    ("vqvae2", {}, 1_384_769),
    ("bench-ae", {"d": 1}, 2_320_449),
    ("bench-ae", {"d": 4}, 2_326_596),
    ("bench-ae", {"d": 16}, 2_351_184),
    ("bench-ae", {"d": 128}, 2_580_672),
    ("vae", {"d": 16}, 2_367_584),
    ("memae", {"d": 16, "memory": 25}, 2_351_584),
    ("ceae", {"d": 16}, 2_351_184),
]


@pytest.mark.parametrize(("name", "options", "count"), ORIGINAL_PARAMETERS)
def test_parameter_counts_equal_the_original_code(name: str, options: dict, count: int) -> None:
    model = create_model(name, **options)  # the paper's size: 256 px (pitfalls), 64 px (benchmark)
    assert sum(p.numel() for p in model.parameters()) == count


def test_ae_at_256_matches_the_protocol() -> None:
    model = create_model("ae").eval()
    assert model.config == {"name": "ae", "size": 256, "d": 128, "width": 32, "loss": "l1"}
    assert model.encoder_widths == [32, 64, 128, 128, 128]
    x = torch.zeros(1, 1, 256, 256)
    with torch.no_grad():
        assert model.features(x).shape == (1, 128, 8, 8)
        assert model.encode(x).shape == (1, 128)
    assert model.to_latent.in_features == 128 * 8 * 8 and model.to_latent.bias is None
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.bias) for c in convs] == [((3, 3), (2, 2), None)] * 5
    ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [u.out_channels for u in ups] == [128, 128, 64, 32, 32]
    assert model.decoder[-1].kernel_size == (1, 1) and model.decoder[-1].out_channels == 1
    assert model.decoder[-1].bias is None


def test_spatial_ae_bottleneck() -> None:
    model = small("spatial-ae", 64).eval()
    with torch.no_grad():
        assert model.encode(batch(64)).shape == (B, 2, 8, 8)


def test_bench_ae_at_64_has_a_4x4x64_feature_map() -> None:
    model = create_model("bench-ae").eval()
    assert model.config == {"name": "bench-ae", "size": 64, "d": 16, "hidden": 1024, "loss": "mse"}
    with torch.no_grad():
        assert model.features(batch(64)).shape == (B, 64, 4, 4)
        assert model.encode(batch(64)).shape == (B, 16)
    last = model.decoder[-1]
    assert isinstance(last, torch.nn.ConvTranspose2d) and last.out_channels == 1 and last.bias is None


def test_vqvae2_codebook_is_ema_updated_in_train_mode_only() -> None:
    model = small("vqvae2", 32)
    x = batch(32)
    books = lambda: [model.quant_t.embed.clone(), model.quant_b.embed.clone()]  # noqa: E731

    model.eval()
    before = books()
    model(x)
    model.training_loss(x)
    assert all(torch.equal(a, b) for a, b in zip(before, books()))

    model.train()
    model.anomaly_map(x)  # evaluates in eval mode: no update
    assert all(torch.equal(a, b) for a, b in zip(before, books()))

    loss, parts = model.training_loss(x)
    loss.backward()
    assert not any(torch.equal(a, b) for a, b in zip(before, books()))
    assert {"recon", "latent"} <= parts.keys()
    assert model.quant_t.embed.grad is None  # learnt by EMA, not by gradients
    q_t, q_b = model.encode(x)
    assert q_t.shape == (B, 8, 4, 4) and q_b.shape == (B, 8, 8, 8)


def test_vae_samples_in_training_and_uses_the_mean_in_eval() -> None:
    model = small("vae", 32)
    x = batch(32)
    model.train()
    assert not torch.equal(model(x), model(x))
    loss, parts = model.training_loss(x)
    assert parts["kl"] >= 0
    assert parts["total"] == pytest.approx(parts["recon"] + 0.005 * parts["kl"], rel=1e-5)
    model.eval()
    with torch.no_grad():
        mu, _ = model.posterior(x)
        assert torch.equal(model(x), model.decode(mu))


def test_vae_kl_is_the_mean_over_latent_dimensions_and_batch() -> None:
    model = small("vae", 32).train()  # d = 8
    mu = torch.tensor([[1.0] * 8, [0.0] * 8])
    logvar = torch.tensor([[0.0] * 8, [math.log(4.0)] * 8])
    model.posterior = lambda x: (mu, logvar)  # type: ignore[method-assign]
    _, parts = model.training_loss(batch(32)[:2])
    # per dimension KL = (mu^2 + sigma^2 - 1 - log sigma^2) / 2: 0.5 (image 1), (3 - ln 4) / 2 (image 2)
    expected = (0.5 + (3.0 - math.log(4.0)) / 2) / 2
    assert parts["kl"] == pytest.approx(expected, rel=1e-6)  # summing over d would give 8x
    assert parts["total"] == pytest.approx(parts["recon"] + 0.005 * expected, rel=1e-6)


def test_vae_eval_latent_sample_is_the_benchmark_test_time_behaviour() -> None:
    x = batch(32)
    model = small("vae", 32, eval_latent="sample").eval()
    assert model.config["eval_latent"] == "sample" and small("vae", 32).config["eval_latent"] == "mean"
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        torch.manual_seed(5)
        sampled = model(x)
        torch.manual_seed(5)
        assert torch.equal(sampled, model.decode(model.sample(mu, logvar)))
        assert not torch.equal(model(x), model(x)) and not torch.equal(sampled, model.decode(mu))


def direct_address(z: torch.Tensor, memory: torch.Tensor, addressing: str, shrink: float):
    """The memory read-out written out in float64, item by item."""
    z, m = z.double().numpy(), memory.detach().double().numpy()
    weights, read = [], []
    for zi in z:
        sim = np.array([zi @ mj if addressing == "dot" else zi @ mj / (np.linalg.norm(zi) * np.linalg.norm(mj))
                        for mj in m])
        w = np.exp(sim - sim.max()) / np.exp(sim - sim.max()).sum()
        w = np.maximum(w - shrink, 0) * w / (np.abs(w - shrink) + 1e-12)
        w = w / max(w.sum(), 1e-12)
        weights.append(w)
        read.append(w @ m)
    return np.array(read), np.array(weights)


@pytest.mark.parametrize("addressing", ["dot", "cosine"])
def test_memae_addressing_equals_a_direct_computation(addressing: str) -> None:
    model = small("memae", 32, addressing=addressing, shrink=0.05).eval()
    assert model.config["addressing"] == addressing
    with torch.no_grad():
        model.memory.mul_(3)  # items of different norms: dot and cosine differ
        z = model.encoder_latent(batch(32)) * 3
        z_hat, w = model.address(z)
    expected_read, expected_w = direct_address(z, model.memory, addressing, 0.05)
    np.testing.assert_allclose(w.numpy(), expected_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(z_hat.numpy(), expected_read, rtol=1e-4, atol=1e-6)
    other = direct_address(z, model.memory, "cosine" if addressing == "dot" else "dot", 0.05)[1]
    assert not np.allclose(expected_w, other, atol=1e-3)
    assert small("memae", 32).config["addressing"] == "dot"  # the benchmark's default


def test_memae_attention_is_a_shrunk_distribution() -> None:
    model = small("memae", 32).eval()
    with torch.no_grad():
        z = model.encoder_latent(batch(32))
        z_hat, w = model.address(z)
    assert z_hat.shape == (B, 8) and w.shape == (B, 10)
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(B))
    _, parts = model.training_loss(batch(32))
    assert parts["entropy"] >= 0
    # a threshold above 1/memory zeroes the smaller weights
    strict = small("memae", 32, shrink=0.1).eval()
    with torch.no_grad():
        _, w = strict.address(z)
    assert (w == 0).any() and torch.allclose(w.sum(1), torch.ones(B))


@pytest.mark.parametrize(("input_range", "fill"), [((0.0, 1.0), 0.0), ((-1.0, 1.0), -1.0)])
def test_ceae_erases_one_square_with_the_range_minimum_in_training_only(input_range, fill) -> None:
    model = small("ceae", 32)
    model.input_range = input_range  # -1 under the ae4ad preset, as the benchmark fills
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    x = torch.full((8, 1, 32, 32), 0.5)

    model.train()
    torch.manual_seed(3)
    model.training_loss(x)
    zero = seen[-1] == fill
    assert (zero | (seen[-1] == 0.5)).all()  # erased pixels hold exactly the fill value
    assert (zero.sum(dim=(1, 2, 3)) == 36).all()  # one 6x6 square per image...
    assert (zero.any(dim=3).sum(dim=(1, 2)) == 6).all()  # 6 rows
    assert (zero.any(dim=2).sum(dim=(1, 2)) == 6).all()  # 6 columns
    assert len({tuple(z.nonzero()[0].tolist()) for z in zero}) > 1  # ...at random positions
    torch.manual_seed(3)
    model.training_loss(x)
    assert torch.equal(seen[-1], seen[-2])  # drawn from torch's RNG

    model(x)
    model.anomaly_map(x)
    model.eval()
    model(x)
    assert all((s == 0.5).all() for s in seen[-3:])
