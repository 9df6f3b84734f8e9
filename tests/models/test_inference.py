"""Inference on numpy images: the model's own input range travels from training through the
checkpoint to ``reconstruct`` and ``anomaly_maps``; batching, mode and device handling."""

import re

import numpy as np
import pytest
import torch

import blindspot.models
from blindspot.errors import BlindspotError
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint
from blindspot.models.device import select_device
from blindspot.models.inference import anomaly_maps, reconstruct

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def images():
    return np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)


def trained_in_minus_one_to_one():
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16).train()
    model.training_loss(torch.rand(4, 1, 32, 32) * 2 - 1)  # batch-norm statistics away from their init
    model.input_range = (-1.0, 1.0)
    return model


def by_hand(model, images):
    """The explicit mapping: [0, 1] -> [-1, 1], the model in eval mode, and back; the MSE residual in [0, 1] units."""
    x = torch.from_numpy(images).unsqueeze(1) * 2 - 1
    model.eval()
    with torch.no_grad():
        recon = ((model(x) + 1) / 2)[:, 0].numpy()
    return recon, (images - recon) ** 2


def test_the_range_travels_through_the_checkpoint(images, tmp_path):
    model = trained_in_minus_one_to_one()
    expected, expected_map = by_hand(model, images)
    path = save_checkpoint(tmp_path / "m.pt", model, step=1, config={}, metrics={})
    loaded = blindspot.models.load(path)
    assert loaded.input_range == (-1.0, 1.0)
    np.testing.assert_allclose(reconstruct(loaded, images, batch_size=2), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(anomaly_maps(loaded, images, batch_size=3), expected_map, rtol=0, atol=1e-6)
    loaded.input_range = (0.0, 1.0)  # what every caller silently got before the range travelled
    assert not np.allclose(reconstruct(loaded, images), expected, atol=1e-3)


def test_training_records_the_range_it_trains_in(tmp_path):
    from blindspot.training import make_config, train

    config = make_config("ae4ad", steps=1, size=32, batch_size=4, val_every=1)
    run = train(config, tmp_path / "run", model_name="bench-ae", model_options={"d": 4, "hidden": 16}, device="cpu")
    assert blindspot.models.load(run / "last.pt").input_range == (-1.0, 1.0)


def test_batched_eval_mode_float32_unclipped_and_mode_restored(images):
    model = trained_in_minus_one_to_one().train()
    one = reconstruct(model, images, batch_size=1)
    assert one.dtype == np.float32 and one.shape == images.shape and model.training
    np.testing.assert_allclose(reconstruct(model, images, batch_size=64), one, rtol=0, atol=1e-6)
    with torch.no_grad():
        model.decoder[-1].weight.mul_(100)  # reconstructions far outside [0, 1] stay as they are
    assert reconstruct(model, images).max() > 1 or reconstruct(model, images).min() < 0


def test_a_module_without_input_range_gets_images_in_zero_to_one(images):
    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x

    np.testing.assert_array_equal(reconstruct(Identity(), images), images)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: reconstruct(m, x[0]), "reconstruct: images must have shape (N, H, W); got (32, 32)."),
        (lambda m, x: anomaly_maps(m, x[:, :16, :16]), "reconstruct: images are 16×16 but the model takes 32×32 inputs; "
         "prepare them at that size (blindspot.data.fit_geometry, or a data config with `size` 32)."),
        (lambda m, x: reconstruct(m, x, batch_size=0), "reconstruct: `batch_size` must be a positive integer; got 0."),
        (lambda m, x: reconstruct(m, x, device="tpu"), "`device` must be cpu, cuda, cuda:N or mps; got 'tpu'."),
    ],
)
def test_errors_name_the_function_and_parameter(images, call, message):
    with pytest.raises(BlindspotError, match=f"^{re.escape(message)}$"):
        call(trained_in_minus_one_to_one(), images)


def test_input_range_is_checked():
    model = create_model("bench-ae", size=32, d=4, hidden=16)
    assert model.input_range == (0.0, 1.0) and model.preparation is None
    model.input_range = [-1, 1]
    assert model.input_range == (-1.0, 1.0) and isinstance(model.input_range[0], float)
    with pytest.raises(BlindspotError, match=re.escape("bench-ae: input_range must be two numbers (low, high) with low < high; got (1, 1).")):
        model.input_range = (1, 1)
    assert "input_range" not in model.config  # the data convention, not the architecture


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device().type in ("cpu", "cuda", "mps")
    with pytest.raises(BlindspotError, match=re.escape("`device` must be cpu, cuda, cuda:N or mps; got 'tpu'.")):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BlindspotError, match="^`device` cuda:1 is not available on this machine"):
            select_device("cuda:1")
    if not torch.backends.mps.is_available():
        with pytest.raises(BlindspotError, match=re.escape("`device` mps is not available on this machine.")):
            select_device("mps")
