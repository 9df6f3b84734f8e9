"""Two-level VQ-VAE-2 (Razavi et al. 2019) with EMA codebooks, ``vqvae2``.

Architecture (``h = hidden``, residual blocks are ReLU -> conv 3x3 (h -> h/4) -> ReLU -> conv 1x1
(h/4 -> h) added to the input, two per stack):

* bottom encoder: conv 4x4/2 (1 -> h/2) -> ReLU -> conv 4x4/2 (h/2 -> h) -> ReLU -> conv 3x3 ->
  2 residual blocks -> ReLU: size -> size/4;
* top encoder: conv 4x4/2 (h -> h/2) -> ReLU -> conv 3x3 (h/2 -> h) -> 2 residual blocks -> ReLU:
  size/4 -> size/8; conv 1x1 to ``code_dim`` and quantised by the top codebook;
* the quantised top is decoded to size/4 (conv 3x3 -> 2 residual blocks -> ReLU -> transposed conv
  4x4/2), concatenated with the bottom features, mapped by a conv 1x1 to ``code_dim`` and
  quantised by the bottom codebook (as in VQ-VAE-2);
* the quantised top, upsampled by a transposed conv 4x4/2, is concatenated with the quantised
  bottom and decoded: conv 3x3 (2 code_dim -> h) -> 2 residual blocks -> ReLU -> transposed conv
  4x4/2 (h -> h/2) -> ReLU -> transposed conv 4x4/2 (h/2 -> 1), identity output.

Each codebook has ``codes`` vectors of ``code_dim`` and is learnt by exponential moving averages
(not by gradients): in train mode each forward pass updates, with decay ``decay``, the count of
vectors assigned to each code and the sum of those vectors, and sets each code to sum / count
with Laplace-smoothed counts. Counts start at 1 and sums at the (standard normal) initial codes,
so unused codes stay where they are rather than blowing up. Like batch-norm statistics, the
update happens in any train-mode forward (also under ``no_grad``) and never in eval mode.
Gradients reach the encoder through the straight-through estimator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindspot.models._base import (
    ReconstructionModel,
    check_loss,
    check_number,
    check_positive_int,
    check_size,
)
from blindspot.models._registry import register_model

__all__ = ["EMAQuantizer", "VQVAE2"]


class EMAQuantizer(nn.Module):
    """Vector quantiser with an EMA codebook of ``codes`` vectors of size ``dim``.

    ``forward(z)`` for z (B, dim, H, W) returns the straight-through quantised z, the latent
    (commitment) loss ``mean((z - sg[q])**2)`` and the code indices (B, H, W).
    """

    def __init__(self, dim: int, codes: int, decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.codes, self.decay, self.eps = dim, codes, decay, eps
        embed = torch.randn(codes, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("embed_sum", embed.clone())

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        zt = z.permute(0, 2, 3, 1)  # (B, H, W, dim)
        flat = zt.reshape(-1, self.dim)
        with torch.no_grad():
            dist = (
                flat.square().sum(1, keepdim=True)
                - 2 * flat @ self.embed.T
                + self.embed.square().sum(1)[None, :]
            )
            idx = dist.argmin(dim=1)
        q = F.embedding(idx, self.embed).view_as(zt)

        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(idx, self.codes).type(flat.dtype)
                self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                smoothed = (self.cluster_size + self.eps) / (n + self.codes * self.eps) * n
                self.embed.copy_(self.embed_sum / smoothed[:, None])

        latent = F.mse_loss(zt, q.detach())
        q = zt + (q - zt).detach()  # straight-through
        return q.permute(0, 3, 1, 2), latent, idx.view(zt.shape[:-1])


class _ResBlock(nn.Module):
    def __init__(self, c: int, c_res: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c_res, 3, padding=1), nn.ReLU(), nn.Conv2d(c_res, c, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _res_stack(c: int, c_res: int, n: int = 2) -> list[nn.Module]:
    return [*[_ResBlock(c, c_res) for _ in range(n)], nn.ReLU()]


@register_model("vqvae2")
class VQVAE2(ReconstructionModel):
    """Two-level VQ-VAE-2 (``vqvae2``): top codes at size/8, bottom codes at size/4.

    ``training_loss`` = recon + ``commitment`` * latent, where latent is the sum of the two
    commitment losses ``mean((z - sg[q])**2)``; logged ``total``, ``recon``, ``latent``
    (unweighted). ``encode(x)`` returns the quantised ``(top, bottom)`` latents, which
    ``decode`` takes back; ``encode_indices(x)`` returns the code indices. Default loss "l1".

    Args:
        size: input height = width, a power of two >= 32.
        hidden: channels of the encoders and decoders (residual blocks use hidden/4).
        codes: codebook size (each level).
        code_dim: dimension of a code vector.
        commitment: weight of the commitment (latent) loss.
        decay: EMA decay of the codebooks, in (0, 1).
        loss: "l1" or "mse".
    """

    name = "vqvae2"

    def __init__(
        self,
        *,
        size: int = 256,
        hidden: int = 128,
        codes: int = 512,
        code_dim: int = 64,
        commitment: float = 0.25,
        decay: float = 0.99,
        loss: str = "l1",
    ) -> None:
        super().__init__()
        n = self.name
        check_size(n, size)
        check_positive_int(n, "hidden", hidden, minimum=2)
        check_positive_int(n, "codebook size codes", codes)
        check_positive_int(n, "code_dim", code_dim)
        check_number(n, "commitment", commitment, low=0.0)
        check_number(n, "decay", decay, low=0.0, high=1.0, low_open=True)
        check_loss(n, loss)
        self._set_config(
            size=size,
            hidden=hidden,
            codes=codes,
            code_dim=code_dim,
            commitment=commitment,
            decay=decay,
            loss=loss,
        )
        self.commitment = float(commitment)
        h, h2, hr, e = hidden, hidden // 2, max(1, hidden // 4), code_dim

        self.enc_b = nn.Sequential(
            nn.Conv2d(1, h2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h2, h, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            *_res_stack(h, hr),
        )
        self.enc_t = nn.Sequential(
            nn.Conv2d(h, h2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h2, h, 3, padding=1),
            *_res_stack(h, hr),
        )
        self.pre_quant_t = nn.Conv2d(h, e, 1)
        self.quant_t = EMAQuantizer(e, codes, float(decay))
        self.dec_t = nn.Sequential(
            nn.Conv2d(e, h, 3, padding=1),
            *_res_stack(h, hr),
            nn.ConvTranspose2d(h, e, 4, stride=2, padding=1),
        )
        self.pre_quant_b = nn.Conv2d(h + e, e, 1)
        self.quant_b = EMAQuantizer(e, codes, float(decay))
        self.upsample_t = nn.ConvTranspose2d(e, e, 4, stride=2, padding=1)
        self.dec = nn.Sequential(
            nn.Conv2d(2 * e, h, 3, padding=1),
            *_res_stack(h, hr),
            nn.ConvTranspose2d(h, h2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(h2, 1, 4, stride=2, padding=1),
        )

    def _quantise(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Quantised top and bottom latents, latent loss, top and bottom indices."""
        feat_b = self.enc_b(x)
        feat_t = self.enc_t(feat_b)
        q_t, lat_t, id_t = self.quant_t(self.pre_quant_t(feat_t))
        z_b = self.pre_quant_b(torch.cat([self.dec_t(q_t), feat_b], dim=1))
        q_b, lat_b, id_b = self.quant_b(z_b)
        return q_t, q_b, lat_t + lat_b, id_t, id_b

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Quantised top (B, code_dim, size/8, size/8) and bottom (B, code_dim, size/4, size/4)."""
        q_t, q_b, _, _, _ = self._quantise(x)
        return q_t, q_b

    def encode_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Code indices of the top (B, size/8, size/8) and bottom (B, size/4, size/4) levels."""
        _, _, _, id_t, id_b = self._quantise(x)
        return id_t, id_b

    def decode(self, z: tuple[Tensor, Tensor]) -> Tensor:
        """Image (B, 1, size, size) from quantised ``(top, bottom)`` latents."""
        q_t, q_b = z
        return self.dec(torch.cat([self.upsample_t(q_t), q_b], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (B, 1, size, size)."""
        self.check_input(x)
        q_t, q_b, _, _, _ = self._quantise(x)
        return self.decode((q_t, q_b))

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """recon + commitment * latent (sum of both levels' commitment losses)."""
        self.check_input(x)
        q_t, q_b, latent, _, _ = self._quantise(x)
        recon = self.reconstruction_loss(self.decode((q_t, q_b)), x)
        total = recon + self.commitment * latent
        return total, {
            "total": float(total.detach()),
            "recon": float(recon.detach()),
            "latent": float(latent.detach()),
        }
