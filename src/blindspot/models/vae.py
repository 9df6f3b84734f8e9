"""Variational autoencoder on the MedIAnomaly benchmark backbone, ``vae``.

Architecture: the ``bench-ae`` encoder and decoder (:mod:`blindspot.models.bench_ae`); the dense
bottleneck outputs ``2 d`` numbers, the posterior mean and log-variance (64 px, d = 16, hidden
1024: 2,367,584 parameters, as in the benchmark). Objective as in the benchmark: recon +
``kl_weight`` * KL with KL averaged over the latent dimensions and the batch (weight 0.005).

One documented deviation, the named option ``eval_latent``: the benchmark samples z at test time
(so its anomaly maps are random); blindspot decodes the posterior mean by default
(``eval_latent="mean"``, deterministic maps) and reproduces the benchmark with
``eval_latent="sample"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindspot.errors import BlindspotError
from blindspot.models._base import check_number
from blindspot.models._registry import register_model
from blindspot.models.bench_ae import BenchBackbone, _check_bench_args, dense_head

__all__ = ["EVAL_LATENTS", "VAE"]

#: What a VAE decodes in eval mode: the posterior mean, or a posterior sample (the benchmark's).
EVAL_LATENTS = ("mean", "sample")


@register_model("vae")
class VAE(BenchBackbone):
    """VAE (``vae``): ``bench-ae`` encoder/decoder; the bottleneck outputs mu and logvar (d each).

    * ``training_loss`` = recon + ``kl_weight`` * KL, where recon is the loss of kind ``loss``
      averaged over pixels of a reconstruction decoded from a reparameterised sample
      ``z = mu + exp(logvar / 2) * eps``, and KL = KL(q(z|x) || N(0, I)) averaged over the ``d``
      latent dimensions and then over the images of the batch (the benchmark's). It always
      samples, whatever the mode. Logged: ``total``, ``recon``, ``kl`` (the unweighted KL).
    * ``forward`` samples in train mode; in eval mode it decodes the posterior mean
      (``eval_latent="mean"``: ``anomaly_map``, always eval, is deterministic) or a posterior
      sample (``eval_latent="sample"``: the benchmark's test-time behaviour, random maps).
    * ``encode`` returns the posterior mean, ``posterior`` returns ``(mu, logvar)``.

    Default loss "mse".

    Args:
        size: input height = width, a power of two >= 32 (64 in the benchmark).
        d: latent size.
        hidden: width of the hidden layer of the dense bottleneck.
        kl_weight: weight of the KL term.
        eval_latent: "mean" (default, a deviation from the benchmark) or "sample" (the benchmark).
        loss: "l1" or "mse".
    """

    name = "vae"

    def __init__(
        self,
        *,
        size: int = 64,
        d: int = 16,
        hidden: int = 1024,
        kl_weight: float = 0.005,
        eval_latent: str = "mean",
        loss: str = "mse",
    ) -> None:
        super().__init__()
        _check_bench_args(self.name, size, d, hidden, loss)
        check_number(self.name, "kl_weight", kl_weight, low=0.0)
        if eval_latent not in EVAL_LATENTS:
            raise BlindspotError(
                f"{self.name}: eval_latent must be 'mean' or 'sample'; got {eval_latent!r}."
            )
        self._set_config(
            size=size, d=d, hidden=hidden, kl_weight=kl_weight, eval_latent=eval_latent, loss=loss
        )
        self.d = d
        self.kl_weight = float(kl_weight)
        self.eval_latent = eval_latent
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
        """Reconstruction: from a posterior sample in train mode (and in eval mode with
        ``eval_latent="sample"``), else from the posterior mean."""
        self.check_input(x)
        mu, logvar = self.posterior(x)
        sample = self.training or self.eval_latent == "sample"
        return self.decode(self.sample(mu, logvar) if sample else mu)

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """recon + kl_weight * KL (KL averaged over the latent dims, then over the batch)."""
        self.check_input(x)
        mu, logvar = self.posterior(x)
        x_hat = self.decode(self.sample(mu, logvar))
        recon = self.reconstruction_loss(x_hat, x)
        kl = (-0.5 * (1.0 + logvar - mu.square() - logvar.exp())).mean()
        total = recon + self.kl_weight * kl
        return total, {
            "total": float(total.detach()),
            "recon": float(recon.detach()),
            "kl": float(kl.detach()),
        }
