"""Model zoo: reconstruction models for anomaly detection, behind one interface and a registry.

Interface (every model; base class :class:`ReconstructionModel`, a ``torch.nn.Module``)
----------------------------------------------------------------------------------------
* Constructor: explicit, typed, keyword-only arguments (no ``**kwargs`` sink, so a typo fails),
  always including ``size`` (input height = width, a power of two >= 32) and ``loss`` ("l1" or
  "mse"; the default depends on the model). A bad value (size not a power of two >= 32, latent
  size < 1, unknown loss, ...) raises :class:`blindspot.errors.BlindspotError` with one sentence
  naming the parameter and the value, e.g. ``"ae: latent size d must be a positive integer; got
  0."``
* ``forward(x)``: x of shape (B, 1, size, size) -> the reconstruction, same shape; deterministic in
  eval mode (except ``vae`` with ``eval_latent="sample"``). The layers are range-agnostic
  (identity output, no final activation). Another input shape raises a BlindspotError.
* ``input_range`` (default (0, 1); (-1, 1) under the ``ae4ad`` preset) and ``preparation``
  (default None): the data convention the model is trained in. Not constructor options: training
  sets them and checkpoints restore them; :mod:`blindspot.models.inference` maps images in
  [0, 1] onto ``input_range`` (and ``ceae`` erases with ``input_range[0]``).
* ``training_loss(x) -> (loss, parts)``: the full training objective on a batch, a scalar tensor
  with grad (the reconstruction loss of kind ``loss`` averaged over pixels, plus any model term),
  and a ``dict[str, float]`` of its components for logging: always ``"total"`` and ``"recon"``,
  plus the unweighted model term (``"latent"`` vqvae2, ``"kl"`` vae, ``"entropy"`` memae).
* ``anomaly_map(x) -> (B, 1, H, W)``: the per-pixel residual of the loss, ``|x - x_hat|`` for
  "l1" and ``(x - x_hat)**2`` for "mse", for every model. It runs under ``torch.no_grad()`` and
  in eval mode (it switches the model to eval for the call and restores the previous mode).
* ``encode(x)`` / ``decode(z)``: ``decode(encode(x)) == forward(x)`` in eval mode (vqvae2's code
  is a ``(top, bottom)`` pair; vae's is the posterior mean, so only with ``eval_latent="mean"``;
  memae's is the memory read-out).
* ``config``: ``{"name": registry name, **constructor kwargs}``; ``create_model(**config)``
  (i.e. ``create_model(config["name"], **rest)``) rebuilds the same architecture, whose
  ``load_state_dict`` accepts the original's ``state_dict()``.

Running, saving and loading
---------------------------
:mod:`blindspot.models.inference`: ``reconstruct(model, images)`` and ``anomaly_maps(model,
images)`` (the loss residual in [0, 1] units) on numpy images in [0, 1] (batched, eval mode, no
gradients, the model's own input range); :mod:`blindspot.models.device`: ``select_device``. :mod:`blindspot.models.checkpoint`: ``save_checkpoint``,
``load_checkpoint`` and ``load_model`` (also ``blindspot.models.load``), which rebuilds a model,
its weights, ``input_range`` and ``preparation`` from the file alone.

Registry
--------
``register_model(name)`` (decorator; a duplicate name raises), ``create_model(name, **kwargs)``,
``list_models()`` (sorted) and ``model_options(name)`` (option -> default). An unknown name or an
option the model does not take raises a BlindspotError listing what is accepted.

Models (defaults; see each class for details)
---------------------------------------------
At their defaults the models equal the original research code's architecture and objective (the
parameter counts are tested against the originals'; no bias in the last layer). The one default
that differs, ``vae``'s ``eval_latent``, is a named option that selects the original behaviour.

=============  =======================================================================  =====
name           default arguments                                                        loss
=============  =======================================================================  =====
``ae``         size=256, d=128, width=32 (Meissen et al., MIDL 2022, dense bottleneck)  l1
``spatial-ae`` size=256, c=1, width=32 (same, 8 x 8 x c bottleneck)                     l1
``vqvae2``     size=256, hidden=128, codes=512, code_dim=64, commitment=0.25,           l1
               decay=0.99 (two-level VQ-VAE-2, EMA codebooks)
``bench-ae``   size=64, d=16, hidden=1024 (MedIAnomaly AE, Cai et al., MICCAI 2024)     mse
``vae``        size=64, d=16, hidden=1024, kl_weight=0.005 (KL averaged over the d      mse
               latent dimensions), eval_latent="mean" (deviation: the benchmark
               samples z at test time, eval_latent="sample")
``memae``      size=64, d=16, hidden=1024, memory=25, shrink=0.0025,                    mse
               entropy_weight=2e-4, addressing="dot" (the benchmark's; "cosine" is
               the MemAE paper's)
``ceae``       size=64, d=16, hidden=1024, erase=10 (filled with input_range[0])        mse
=============  =======================================================================  =====

>>> from blindspot.models import create_model, list_models
>>> list_models()
['ae', 'bench-ae', 'ceae', 'memae', 'spatial-ae', 'vae', 'vqvae2']
>>> model = create_model("bench-ae", d=8)
>>> model.config
{'name': 'bench-ae', 'size': 64, 'd': 8, 'hidden': 1024, 'loss': 'mse'}
>>> create_model("aee")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
blindspot.errors.BlindspotError: unknown model 'aee'; registered: ae, ...; did you mean 'ae'?
"""

from blindspot.models._base import LOSSES, ReconstructionModel
from blindspot.models._registry import create_model, list_models, model_options, register_model
from blindspot.models.bench_ae import BenchAE
from blindspot.models.ceae import CEAE
from blindspot.models.checkpoint import load_model as load
from blindspot.models.memae import MemAE
from blindspot.models.pitfalls_ae import AE, SpatialAE
from blindspot.models.vae import VAE
from blindspot.models.vqvae import VQVAE2

__all__ = [
    "AE",
    "CEAE",
    "LOSSES",
    "VAE",
    "VQVAE2",
    "BenchAE",
    "MemAE",
    "ReconstructionModel",
    "SpatialAE",
    "create_model",
    "list_models",
    "load",
    "model_options",
    "register_model",
]
