"""Context-encoding autoencoder on the benchmark backbone, ``ceae``.

Architecture: exactly ``bench-ae`` (:mod:`blindspot.models.bench_ae`; 64 px, d = 16: 2,351,184
parameters, as in the benchmark), trained to inpaint: one ``erase`` x ``erase`` square (10 px in
the benchmark) of each training input is filled with the minimum of the model's
``input_range`` (-1 under the ``ae4ad`` preset, as in the benchmark; 0 for [0, 1]) and the loss
compares the reconstruction with the whole clean image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindspot.errors import BlindspotError
from blindspot.models._base import _is_int
from blindspot.models._registry import register_model
from blindspot.models.bench_ae import BenchAE, _check_bench_args

__all__ = ["CEAE"]


@register_model("ceae")
class CEAE(BenchAE):
    """Context-encoding AE (``ceae``): the ``bench-ae`` architecture trained to inpaint.

    In ``training_loss`` one square of ``erase`` x ``erase`` pixels per image (the given pixel
    count, not rescaled with ``size``) is set to ``input_range[0]``, the minimum of the model's
    input range, at a position drawn uniformly from torch's RNG (vectorised over the batch); the
    loss compares the reconstruction with the clean image. ``forward`` and ``anomaly_map`` never
    erase. Default loss "mse".

    Args:
        size: input height = width, a power of two >= 32 (64 in the benchmark).
        d: latent size.
        hidden: width of the hidden layer of the dense bottleneck.
        erase: side of the erased square in pixels.
        loss: "l1" or "mse".
    """

    name = "ceae"

    def __init__(
        self,
        *,
        size: int = 64,
        d: int = 16,
        hidden: int = 1024,
        erase: int = 10,
        loss: str = "mse",
    ) -> None:
        _check_bench_args(self.name, size, d, hidden, loss)
        if not (_is_int(erase) and 1 <= erase <= size):
            raise BlindspotError(
                f"{self.name}: erase (square side in pixels) must be an integer in "
                f"[1, size={size}]; got {erase!r}."
            )
        super().__init__(size=size, d=d, hidden=hidden, loss=loss)
        self._set_config(size=size, d=d, hidden=hidden, erase=erase, loss=loss)
        self.erase = erase

    def erase_mask(self, x: Tensor) -> Tensor:
        """Bool mask (B, 1, size, size), True on one random erase x erase square per image."""
        b, s, e = x.shape[0], self.size, self.erase
        top = torch.randint(0, s - e + 1, (b, 1), device=x.device)
        left = torch.randint(0, s - e + 1, (b, 1), device=x.device)
        idx = torch.arange(s, device=x.device)
        rows = (idx >= top) & (idx < top + e)  # (B, s)
        cols = (idx >= left) & (idx < left + e)
        return (rows[:, :, None] & cols[:, None, :])[:, None]

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction loss of the clean image from the input with one square erased (filled
        with ``input_range[0]``)."""
        self.check_input(x)
        corrupted = x.masked_fill(self.erase_mask(x), self.input_range[0])
        recon = self.reconstruction_loss(self(corrupted), x)
        return recon, {"total": float(recon.detach()), "recon": float(recon.detach())}
