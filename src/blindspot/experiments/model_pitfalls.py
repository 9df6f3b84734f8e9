"""MIDL 2022 experiment 3 (computation only): the intensity grid with a model's reconstruction instead of a blur.

For every image and every anomaly intensity i, a disk of intensity i (one centre per image shared
by every intensity) is placed inside the brain, and the anomaly map is ``|x̂ − x_anomalous|`` where
x̂ is the model's reconstruction of

* ``"normal"``: the normal image. x̂ then does not depend on i: one model pass per image, and the
  negatives (pixels outside the label) are sorted once and shared by every intensity, exactly as
  the blur grid of experiment 1 shares them (:func:`blindspot.experiments.grid.reconstruction_ap`);
* ``"anomalous"``: the anomalous image itself (what a deployed model sees): one model pass per
  (image, intensity), batched, and AP per map with :func:`blindspot.metrics.average_precision_batch`.

The model's AP curve is matched to the σ column of an experiment-1 blur grid on the same images and
centres with the smallest L1 distance: "this model behaves like a Gaussian blur of σ", when the
match is close (:func:`blindspot.experiments.pitfalls.match_quality`). The result folders are
written by :mod:`blindspot.experiments.runs`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from blindspot.anomalies import anomaly_labels
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import reconstruction_ap
from blindspot.experiments.pitfalls import experiment_centers, match_curves, match_quality
from blindspot.metrics import average_precision_batch
from blindspot.models.inference import reconstruct as run_model
from blindspot.progress import progress

__all__ = ["RECONSTRUCT", "match_blur", "model_intensity_experiment"]

RECONSTRUCT = ("normal", "anomalous")


def model_intensity_experiment(
    model,
    images: np.ndarray,
    *,
    intensities: Sequence[float],
    radius: float = 20,
    seed: int = 0,
    centers: np.ndarray | None = None,
    reconstruct: str = "normal",
    batch_size: int = 64,
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Experiment 3: AP of ``|x̂ − x_anomalous|`` for a disk of every intensity, x̂ from ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A reconstruction model whose input size equals the images' size; it is fed in its own
        ``input_range`` (:func:`blindspot.models.inference.reconstruct`).
    images : ndarray of float32, shape (N, H, W)
        Normal images in [0, 1] (foreground > 0).
    intensities : sequence of float, length I
    radius, seed, centers
        As in :func:`blindspot.experiments.pitfalls.intensity_experiment` (same seed and images →
        the same centres as experiment 1).
    reconstruct : {"normal", "anomalous"}
        Which image the model reconstructs (see the module docstring).

    Returns
    -------
    dict with ``intensities`` (I,), ``ap`` (I,) mean over images, ``ap_per_image`` (N, I),
    ``residual_mean`` (I,) (mean of the anomaly map over pixels and images), ``centers`` (N, 2),
    ``recon_error`` (scalar: mean |x̂ − x| of the normal images' reconstructions over all pixels),
    ``recon_error_per_image`` (N,) and ``reconstructions`` (N, H, W), the normal reconstructions.
    """
    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"`reconstruct` must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    intensities = np.asarray(intensities, float)
    centers = experiment_centers(images, centers, seed)
    labels = anomaly_labels(images, centers, radius)
    values = intensities.astype(images.dtype)
    options = dict(batch_size=batch_size, device=device)
    normal = run_model(model, images, **options)
    recon_error = np.abs(normal - images).mean(axis=(1, 2), dtype=np.float64)
    n_images, n_values = len(images), len(values)
    ap = np.empty((n_images, n_values))
    residual = np.empty((n_images, n_values))
    if reconstruct == "normal":
        for n in range(n_images):
            ap[n], residual[n] = reconstruction_ap(images[n], labels[n], values[:, None], normal[n])
    else:
        group = max(1, batch_size // n_values)  # several images per model call when the grid is smaller than a batch
        with progress(n_images, "anomalous reconstructions", unit="img") as bar:
            for start in range(0, n_images, group):
                stop = min(start + group, n_images)
                label = np.repeat(labels[start:stop], n_values, axis=0)  # (g·I, H, W), image-major
                intensity = np.tile(values, stop - start)[:, None, None]
                anomalous = np.where(label, intensity, np.repeat(images[start:stop], n_values, axis=0))
                maps = np.abs(run_model(model, anomalous, **options) - anomalous)
                ap[start:stop] = average_precision_batch(label, maps).reshape(stop - start, n_values)
                residual[start:stop] = maps.mean(axis=(1, 2), dtype=np.float64).reshape(stop - start, n_values)
                bar.update(stop - start)
    return {
        "intensities": intensities,
        "ap": ap.mean(axis=0),
        "ap_per_image": ap,
        "residual_mean": residual.mean(axis=0),
        "centers": centers,
        "recon_error": np.float64(recon_error.mean()),
        "recon_error_per_image": recon_error,
        "reconstructions": normal,
    }


def match_blur(ap: np.ndarray, blur_ap: np.ndarray, ap_per_image: np.ndarray | None = None,
               blur_per_image: np.ndarray | None = None, **bootstrap) -> dict:
    """The σ column of ``blur_ap`` (I, S) closest (L1) to the model curve ``ap`` (I,), and whether it matches.

    The verdict is :func:`blindspot.experiments.pitfalls.match_quality`'s (relative to the curves'
    spread, checked against the per-image curves ``ap_per_image`` (N, I) when given, paired with the
    grid's ``blur_per_image`` (N, I, S) when given too; ``bootstrap``: ``resamples``, ``level``,
    ``seed`` of its interval; never at the largest σ of the grid). Returns ``index`` and the scalars
    of ``match_quality``.
    """
    curve, columns = np.asarray(ap)[None, :], np.asarray(blur_ap).T
    index = match_curves(curve, columns)
    per_image = None if ap_per_image is None else np.asarray(ap_per_image)[:, None, :]
    blur_columns = None if blur_per_image is None else np.swapaxes(np.asarray(blur_per_image), 1, 2)
    quality = match_quality(curve, columns, index, upper_edge=True, per_image=per_image, reference_per_image=blur_columns,
                            **bootstrap)
    return {"index": int(index[0]), **{k: v[0].item() for k, v in quality.items()}}
