"""Memory-augmented autoencoder (MemAE, Gong et al. 2019) on the benchmark backbone, ``memae``.

Architecture: the ``bench-ae`` encoder, dense bottleneck and decoder
(:mod:`blindspot.models.bench_ae`) with a learnt memory of ``memory`` latent vectors between the
bottleneck halves (64 px, d = 16, memory 25: 2,351,584 parameters, as in the benchmark). The
latent addresses the memory by a softmax over its similarity to each item, the weights are
hard-shrunk (0.0025) and their entropy is added to the loss (weight 2e-4).

The similarity is the named option ``addressing``: ``"dot"`` (default), the dot product, as in
the MedIAnomaly benchmark's code; ``"cosine"``, the cosine similarity of the MemAE paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindspot.errors import BlindspotError
from blindspot.models._base import check_number, check_positive_int
from blindspot.models._registry import register_model
from blindspot.models.bench_ae import BenchBackbone, _check_bench_args, dense_head

__all__ = ["ADDRESSINGS", "MemAE"]

_EPS = 1e-12
#: Similarities a MemAE can address its memory with: dot product (the benchmark's) or cosine (the paper's).
ADDRESSINGS = ("dot", "cosine")


@register_model("memae")
class MemAE(BenchBackbone):
    """MemAE (``memae``): ``bench-ae`` encoder/decoder with a memory of ``memory`` latent slots.

    The encoder's latent z (B, d) addresses the memory M (memory, d) with attention
    ``w = softmax_i(z . M_i)`` (``addressing="dot"``, the benchmark's) or
    ``w = softmax_i(cos(z, M_i))`` (``addressing="cosine"``, the paper's); the weights are
    hard-shrunk,
    ``w' = relu(w - shrink) * w / (|w - shrink| + 1e-12)``, and L1-renormalised; the decoder sees
    ``z_hat = w' M``. ``training_loss`` = recon + ``entropy_weight`` * mean over the batch of the
    entropy ``-sum_i w'_i log w'_i`` of the shrunk weights; logged ``total``, ``recon``,
    ``entropy`` (unweighted). Memory initialised uniformly in +-1/sqrt(d).

    ``encode`` returns the memory read-out z_hat (what the decoder sees, so
    ``decode(encode(x)) == forward(x)``); ``encoder_latent`` returns z and ``address(z)`` returns
    ``(z_hat, w')``. Default loss "mse".

    Args:
        size: input height = width, a power of two >= 32 (64 in the benchmark).
        d: latent size.
        hidden: width of the hidden layer of the dense bottleneck.
        memory: number of memory items.
        shrink: hard-shrinkage threshold of the addressing weights (0 turns it off).
        entropy_weight: weight of the addressing entropy in the loss.
        addressing: "dot" (the benchmark's) or "cosine" (the MemAE paper's) similarity.
        loss: "l1" or "mse".
    """

    name = "memae"

    def __init__(
        self,
        *,
        size: int = 64,
        d: int = 16,
        hidden: int = 1024,
        memory: int = 25,
        shrink: float = 0.0025,
        entropy_weight: float = 2e-4,
        addressing: str = "dot",
        loss: str = "mse",
    ) -> None:
        super().__init__()
        _check_bench_args(self.name, size, d, hidden, loss)
        check_positive_int(self.name, "number of memory slots memory", memory)
        check_number(self.name, "shrink threshold shrink", shrink, low=0.0, high=1.0)
        check_number(self.name, "entropy_weight", entropy_weight, low=0.0)
        if addressing not in ADDRESSINGS:
            raise BlindspotError(
                f"{self.name}: addressing must be 'dot' or 'cosine'; got {addressing!r}."
            )
        self._set_config(
            size=size,
            d=d,
            hidden=hidden,
            memory=memory,
            shrink=shrink,
            entropy_weight=entropy_weight,
            addressing=addressing,
            loss=loss,
        )
        self.shrink = float(shrink)
        self.entropy_weight = float(entropy_weight)
        self.addressing = addressing
        self._build(size, d, hidden)
        self.to_latent = dense_head(self._flat, hidden, d)
        bound = 1.0 / math.sqrt(d)
        self.memory = nn.Parameter(torch.empty(memory, d).uniform_(-bound, bound))

    def encoder_latent(self, x: Tensor) -> Tensor:
        """Encoder latent z (B, d) before memory addressing."""
        return self.to_latent(self.encoder(x).flatten(1))

    def address(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Memory read-out z_hat (B, d) and shrunk, renormalised attention weights (B, memory)."""
        if self.addressing == "dot":
            sim = z @ self.memory.T
        else:
            sim = F.normalize(z, dim=1) @ F.normalize(self.memory, dim=1).T
        w = sim.softmax(dim=1)
        if self.shrink > 0:
            shifted = w - self.shrink
            w = F.relu(shifted) * w / (shifted.abs() + _EPS)
            w = F.normalize(w, p=1, dim=1, eps=_EPS)
        return w @ self.memory, w

    def encode(self, x: Tensor) -> Tensor:
        """Memory read-out z_hat (B, d)."""
        return self.address(self.encoder_latent(x))[0]

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (B, 1, size, size)."""
        self.check_input(x)
        return self.decode(self.encode(x))

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """recon + entropy_weight * attention entropy (averaged over the batch)."""
        self.check_input(x)
        z_hat, w = self.address(self.encoder_latent(x))
        recon = self.reconstruction_loss(self.decode(z_hat), x)
        entropy = (-w * torch.log(w + _EPS)).sum(dim=1).mean()
        total = recon + self.entropy_weight * entropy
        return total, {
            "total": float(total.detach()),
            "recon": float(recon.detach()),
            "entropy": float(entropy.detach()),
        }
