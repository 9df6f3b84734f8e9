"""The autoencoders of Meissen et al., "Pitfalls of unsupervised anomaly detection" (MIDL 2022).

``ae`` has a dense bottleneck, ``spatial-ae`` a spatial (8 x 8 x c) one; both share this
convolutional encoder and decoder, written from the protocol's description:

* Encoder: ``n = log2(size) - 3`` blocks of Conv2d 3x3, stride 2, padding 1, ``bias=False`` ->
  BatchNorm2d -> LeakyReLU (negative slope 0.01, PyTorch's default), taking ``size`` down to 8x8.
  Block ``k`` (k = 0, 1, ...) has ``min(4 * width, width * 2**k)`` channels, e.g. 32, 64, 128,
  128, 128 at 256 px with ``width=32``.
* Decoder (our reading of "mirrors ..., one more upsampling block at width w, then a 1x1 conv to
  one channel, identity output"): ``n`` blocks of ConvTranspose2d 3x3, stride 2, padding 1,
  output_padding 1, ``bias=False`` -> BatchNorm2d -> LeakyReLU. The first ``n - 1`` blocks mirror
  the encoder's channel changes (block widths in reverse: 128 -> 128 -> 128 -> 64 -> 32 at 256 px)
  and the last one is the extra upsampling block at width ``width`` (32 -> 32), so the decoder
  doubles the resolution exactly ``n`` times, 8x8 -> size x size. A final Conv2d 1x1 with
  ``bias=False`` (as in the original code) maps ``width`` channels to one, with no output
  activation (range-agnostic).

No layer has a bias except batch norm's shift, as in the original code; the parameter counts at
256 px equal the original's (``ae`` d = 32 / 64 / 128: 1,309,696 / 1,833,984 / 2,882,560;
``spatial-ae`` c = 1 / 2: 785,664 / 785,920).
"""

from __future__ import annotations

from torch import Tensor, nn

from blindspot.models._base import (
    ReconstructionModel,
    check_loss,
    check_positive_int,
    check_size,
)
from blindspot.models._registry import register_model

__all__ = ["AE", "SpatialAE", "encoder_widths"]


def encoder_widths(size: int, width: int) -> list[int]:
    """Channel widths of the encoder blocks taking ``size`` down to 8x8."""
    n = size.bit_length() - 1 - 3  # log2(size) - log2(8)
    return [min(4 * width, width * 2**k) for k in range(n)]


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    )


class _PitfallsAE(ReconstructionModel):
    """Shared encoder/decoder; subclasses add ``self.bottleneck_in`` / ``self.bottleneck_out``."""

    def _build(self, size: int, width: int) -> None:
        widths = encoder_widths(size, width)
        self.encoder_widths = widths
        self.bottleneck_channels = widths[-1]
        ins = [1, *widths[:-1]]
        self.encoder = nn.Sequential(*[_down(a, b) for a, b in zip(ins, widths)])
        rev = widths[::-1]
        outs = [*rev[1:], width]
        self.decoder = nn.Sequential(
            *[_up(a, b) for a, b in zip(rev, outs)],
            nn.Conv2d(width, 1, 1, bias=False),
        )

    def features(self, x: Tensor) -> Tensor:
        """Encoder feature map (B, C, 8, 8) before the bottleneck."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (B, 1, size, size)."""
        self.check_input(x)
        return self.decode(self.encode(x))


@register_model("ae")
class AE(_PitfallsAE):
    """Dense autoencoder (``ae``): encoder -> Linear(C*8*8 -> d) -> Linear(d -> C*8*8) -> decoder.

    Both bottleneck layers have ``bias=False`` and no activation. Default loss "l1"; the anomaly
    map is ``|x - x_hat|`` (``(x - x_hat)**2`` with ``loss="mse"``).

    Args:
        size: input height = width, a power of two >= 32.
        d: latent size (length of the code vector).
        width: channels of the first encoder block (later blocks double it, capped at 4x).
        loss: "l1" or "mse".
    """

    name = "ae"

    def __init__(self, *, size: int = 256, d: int = 128, width: int = 32, loss: str = "l1") -> None:
        super().__init__()
        check_size(self.name, size)
        check_positive_int(self.name, "latent size d", d)
        check_positive_int(self.name, "width", width)
        check_loss(self.name, loss)
        self._set_config(size=size, d=d, width=width, loss=loss)
        self._build(size, width)
        flat = self.bottleneck_channels * 8 * 8
        self.to_latent = nn.Linear(flat, d, bias=False)
        self.from_latent = nn.Linear(d, flat, bias=False)

    def encode(self, x: Tensor) -> Tensor:
        """Latent code (B, d)."""
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """Image (B, 1, size, size) from a code (B, d)."""
        h = self.from_latent(z).view(z.shape[0], self.bottleneck_channels, 8, 8)
        return self.decoder(h)


@register_model("spatial-ae")
class SpatialAE(_PitfallsAE):
    """Spatial autoencoder (``spatial-ae``): the ``ae`` encoder/decoder with an 8x8xc bottleneck.

    The bottleneck is a Conv2d 1x1 from C to ``c`` channels and a ConvTranspose2d 1x1 back, both
    with ``bias=False`` and no activation (mirroring the dense ``ae``'s bias-free linears).
    Default loss "l1".

    Args:
        size: input height = width, a power of two >= 32.
        c: bottleneck channels (the code is c x 8 x 8).
        width: channels of the first encoder block.
        loss: "l1" or "mse".
    """

    name = "spatial-ae"

    def __init__(self, *, size: int = 256, c: int = 1, width: int = 32, loss: str = "l1") -> None:
        super().__init__()
        check_size(self.name, size)
        check_positive_int(self.name, "bottleneck channels c", c)
        check_positive_int(self.name, "width", width)
        check_loss(self.name, loss)
        self._set_config(size=size, c=c, width=width, loss=loss)
        self._build(size, width)
        self.to_latent = nn.Conv2d(self.bottleneck_channels, c, 1, bias=False)
        self.from_latent = nn.ConvTranspose2d(c, self.bottleneck_channels, 1, bias=False)

    def encode(self, x: Tensor) -> Tensor:
        """Latent code (B, c, 8, 8)."""
        return self.to_latent(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Image (B, 1, size, size) from a code (B, c, 8, 8)."""
        return self.decoder(self.from_latent(z))
