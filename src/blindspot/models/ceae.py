"""Context-encoding autoencoder on the benchmark backbone, ``ceae``."""

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
    count, not rescaled with ``size``) is set to 0 in the input, at a position drawn uniformly
    from torch's RNG (vectorised over the batch); the loss compares the reconstruction with the
    clean image. ``forward`` and ``anomaly_map`` never erase. Default loss "mse".
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
        """Reconstruction loss of the clean image from the input with one square erased."""
        self.check_input(x)
        corrupted = x.masked_fill(self.erase_mask(x), 0.0)
        recon = self.reconstruction_loss(self(corrupted), x)
        return recon, {"total": float(recon.detach()), "recon": float(recon.detach())}
