"""Variational autoencoder on the MedIAnomaly benchmark backbone, ``vae``."""

from __future__ import annotations

import torch
from torch import Tensor

from blindspot.models._base import check_number
from blindspot.models._registry import register_model
from blindspot.models.bench_ae import BenchBackbone, _check_bench_args, dense_head

__all__ = ["VAE"]


@register_model("vae")
class VAE(BenchBackbone):
    """VAE (``vae``): ``bench-ae`` encoder/decoder; the bottleneck outputs mu and logvar (d each).

    * ``training_loss`` = recon + ``kl_weight`` * KL, where recon is the loss of kind ``loss``
      averaged over pixels of a reconstruction decoded from a reparameterised sample
      ``z = mu + exp(logvar / 2) * eps``, and KL = KL(q(z|x) || N(0, I)) summed over the ``d``
      latent dimensions and averaged over the images of the batch. It always samples, whatever
      the mode. Logged: ``total``, ``recon``, ``kl`` (the unweighted KL).
    * ``forward`` samples in train mode and decodes the posterior mean in eval mode;
      ``anomaly_map`` (always eval) therefore uses the posterior mean and is deterministic.
      The MedIAnomaly benchmark instead samples z at test time; we use the mean.
    * ``encode`` returns the posterior mean, ``posterior`` returns ``(mu, logvar)``.

    Default loss "mse". Args: ``size``, ``d`` (latent size), ``hidden``, ``kl_weight``, ``loss``.
    """

    name = "vae"

    def __init__(
        self,
        *,
        size: int = 64,
        d: int = 16,
        hidden: int = 1024,
        kl_weight: float = 0.005,
        loss: str = "mse",
    ) -> None:
        super().__init__()
        _check_bench_args(self.name, size, d, hidden, loss)
        check_number(self.name, "kl_weight", kl_weight, low=0.0)
        self._set_config(size=size, d=d, hidden=hidden, kl_weight=kl_weight, loss=loss)
        self.d = d
        self.kl_weight = float(kl_weight)
        self._build(size, d, hidden)
        self.to_posterior = dense_head(self._flat, hidden, 2 * d)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (B, d) each of q(z | x)."""
        mu, logvar = self.to_posterior(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: Tensor) -> Tensor:
        """Posterior mean (B, d)."""
        return self.posterior(x)[0]

    @staticmethod
    def sample(mu: Tensor, logvar: Tensor) -> Tensor:
        """Reparameterised sample ``mu + exp(logvar / 2) * eps``, eps ~ N(0, I) (torch's RNG)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction: from a posterior sample in train mode, from the mean in eval mode."""
        self.check_input(x)
        mu, logvar = self.posterior(x)
        return self.decode(self.sample(mu, logvar) if self.training else mu)

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """recon + kl_weight * KL (KL summed over latent dims, averaged over the batch)."""
        self.check_input(x)
        mu, logvar = self.posterior(x)
        x_hat = self.decode(self.sample(mu, logvar))
        recon = self.reconstruction_loss(x_hat, x)
        kl = (-0.5 * (1.0 + logvar - mu.square() - logvar.exp())).sum(dim=1).mean()
        total = recon + self.kl_weight * kl
        return total, {
            "total": float(total.detach()),
            "recon": float(recon.detach()),
            "kl": float(kl.detach()),
        }
