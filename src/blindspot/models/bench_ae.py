"""The MedIAnomaly benchmark autoencoder (Cai et al., MICCAI 2024), ``bench-ae``.

Its encoder, decoder and dense bottleneck are shared by ``vae``, ``memae`` and ``ceae``:

* Encoder: 4 blocks of Conv2d 4x4, stride 2, padding 1, ``bias=False`` -> BatchNorm2d -> ReLU
  with 16, 32, 64, 64 channels (64 px -> 64 x 4 x 4; in general 64 x size/16 x size/16).
* Bottleneck: flatten -> Linear -> ``hidden`` -> BatchNorm1d -> ReLU -> Linear -> ``d``, mirrored
  by Linear ``d`` -> ``hidden`` -> BatchNorm1d -> ReLU -> Linear -> 64*(size/16)**2 -> reshape.
  The linears keep their bias.
* Decoder: ConvTranspose2d 4x4, stride 2, padding 1 blocks 64 -> 64 -> 32 -> 16 -> 1, all
  ``bias=False``; each but the last is followed by BatchNorm2d -> ReLU; the last has no
  normalisation or activation (identity output, range-agnostic) and, as in the benchmark's code,
  no bias.

The parameter counts equal the benchmark's (64 px, hidden 1024; ``bench-ae`` d = 1 / 4 / 16 / 128:
2,320,449 / 2,326,596 / 2,351,184 / 2,580,672).
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

__all__ = ["BENCH_WIDTHS", "BenchAE", "bench_decoder", "bench_encoder", "dense_head"]

#: Channels of the four encoder blocks (the decoder mirrors them).
BENCH_WIDTHS = (16, 32, 64, 64)


def bench_encoder() -> nn.Sequential:
    """Four stride-2 conv blocks: (B, 1, s, s) -> (B, 64, s/16, s/16)."""
    layers: list[nn.Module] = []
    c_in = 1
    for c in BENCH_WIDTHS:
        layers += [
            nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        ]
        c_in = c
    return nn.Sequential(*layers)


def bench_decoder() -> nn.Sequential:
    """Four stride-2 transposed-conv blocks: (B, 64, s/16, s/16) -> (B, 1, s, s), linear output, no bias."""
    layers: list[nn.Module] = []
    rev = BENCH_WIDTHS[::-1]  # 64, 64, 32, 16
    for c_in, c_out in zip(rev[:-1], rev[1:]):
        layers += [
            nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    layers.append(nn.ConvTranspose2d(rev[-1], 1, 4, stride=2, padding=1, bias=False))
    return nn.Sequential(*layers)


def dense_head(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear -> ``hidden`` -> BatchNorm1d -> ReLU -> Linear -> ``n_out``."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


class BenchBackbone(ReconstructionModel):
    """Bench encoder/decoder plus the decoding half of the dense bottleneck (``d`` -> image)."""

    def _build(self, size: int, d: int, hidden: int) -> None:
        self.feature_shape = (BENCH_WIDTHS[-1], size // 16, size // 16)
        flat = BENCH_WIDTHS[-1] * (size // 16) ** 2
        self.encoder = bench_encoder()
        self.from_latent = dense_head(d, hidden, flat)
        self.decoder = bench_decoder()
        self._flat = flat

    def features(self, x: Tensor) -> Tensor:
        """Encoder feature map (B, 64, size/16, size/16) before flattening."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Image (B, 1, size, size) from a code (B, d)."""
        return self.decoder(self.from_latent(z).view(z.shape[0], *self.feature_shape))


def _check_bench_args(name: str, size: int, d: int, hidden: int, loss: str) -> None:
    check_size(name, size)
    check_positive_int(name, "latent size d", d)
    check_positive_int(name, "hidden", hidden)
    check_loss(name, loss)


@register_model("bench-ae")
class BenchAE(BenchBackbone):
    """MedIAnomaly benchmark AE (``bench-ae``): conv encoder -> dense bottleneck d -> conv decoder.

    Default loss "mse"; the anomaly map is ``(x - x_hat)**2`` (``|x - x_hat|`` with ``loss="l1"``).
    Note: batch norm in the dense bottleneck needs batches of at least 2 images in train mode.

    Args:
        size: input height = width, a power of two >= 32 (64 in the benchmark).
        d: latent size.
        hidden: width of the hidden layer of the dense bottleneck.
        loss: "l1" or "mse".
    """

    name = "bench-ae"

    def __init__(
        self, *, size: int = 64, d: int = 16, hidden: int = 1024, loss: str = "mse"
    ) -> None:
        super().__init__()
        _check_bench_args(self.name, size, d, hidden, loss)
        self._set_config(size=size, d=d, hidden=hidden, loss=loss)
        self._build(size, d, hidden)
        self.to_latent = dense_head(self._flat, hidden, d)

    def encode(self, x: Tensor) -> Tensor:
        """Latent code (B, d)."""
        return self.to_latent(self.encoder(x).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (B, 1, size, size)."""
        self.check_input(x)
        return self.decode(self.encode(x))
