"""The main job (``make demo``): the residual-pitfall experiments on the embedded MNI152 data, one report.

It runs experiment 1 on the plain and on the histogram-equalised slices and experiment 2 matched to
the plain grid, trains a small autoencoder on the template's training slices and runs experiment 3
with it (its AP curve matched to a blur σ), and writes ``report.md`` linking every figure and table.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from blindspot.data import DataOptions
from blindspot.experiments.runs import write_intensity, write_texture
from blindspot.results import check_out_dir, result_folder

GRID = dict(radius=20, n_intensities=100, n_sigmas=100, sigma_max=5.0, seed=0, save_inputs=False)
#: The demo's trained model: the MIDL 2022 dense AE at 64 px, the ``quick`` preset cut to 200 steps
#: (about 20 s on 2 idle CPU cores; several times that when the cores are shared).
MODEL = dict(name="ae", options={"d": 32}, preset="quick", overrides={"size": 64, "steps": 200})


def run_demo(out: str | Path = "demo-report", *, overwrite: bool = False, workers: int | None = None) -> Path:
    """Write the demo report folder and return the path of its ``report.md``."""
    check_out_dir(out, overwrite=overwrite)
    started = time.perf_counter()
    plain_options, equalized_options = DataOptions(), DataOptions(equalize=True)
    plain = plain_options.load()
    with result_folder(out, overwrite=overwrite) as folder:
        for name, options in (("intensity", plain_options), ("intensity-equalized", equalized_options)):
            (folder / name).mkdir(exist_ok=True)
            imageset = plain if options == plain_options else options.load()
            exp1 = write_intensity(folder / name, imageset, {**asdict(options), **GRID}, workers=workers)
            if name == "intensity":
                plain_ap = exp1["ap"]
        (folder / "texture").mkdir(exist_ok=True)
        write_texture(folder / "texture", plain, {**asdict(plain_options), **GRID}, match=folder / "intensity", workers=workers)
        model_section = _model_experiment(folder, plain, plain_options, workers)
        sections = [
            _section(folder, "intensity", "Experiment 1: anomaly intensity × reconstruction error",
                     "heatmap.png", "histogram.png"),
            _section(folder, "intensity-equalized", "Experiment 1 after histogram equalisation",
                     "heatmap.png", "histogram.png"),
            _section(folder, "texture", "Experiment 2: texture anomalies", "textures.png"),
            model_section,
        ]
        elapsed = time.perf_counter() - started
        (folder / "report.md").write_text(_REPORT.format(
            n=len(plain), sections="\n\n".join(sections), seconds=elapsed, mean_ap=plain_ap.mean()))
    return Path(out) / "report.md"


def _model_experiment(folder: Path, imageset, options: DataOptions, workers: int | None) -> str:
    """Train :data:`MODEL` into ``folder/model``, run experiment 3 on its last checkpoint, return the report section.

    An interrupted demo continues the training where it stopped (the run folder lives in the
    demo's staging folder).
    """
    from blindspot.experiments.model_pitfalls import load_checkpoint_model, write_model
    from blindspot.training import make_config, train

    config = make_config(MODEL["preset"], **MODEL["overrides"])
    started = time.perf_counter()
    run = train(config, folder / "model", model_name=MODEL["name"], model_options=MODEL["options"], data=options,
                resume=(folder / "model").exists(), device="cpu")
    seconds = time.perf_counter() - started
    model, record = load_checkpoint_model(run / "last.pt", device="cpu")
    (folder / "model-pitfalls").mkdir(exist_ok=True)
    parameters = {**asdict(options), "checkpoint": "model/last.pt", "reconstruct": "normal", "radius": GRID["radius"],
                  "n_intensities": GRID["n_intensities"], "seed": GRID["seed"], "batch_size": 64, "save_inputs": False}
    write_model(folder / "model-pitfalls", imageset, parameters, model=model, record=record, workers=workers)
    section = _section(folder, "model-pitfalls", "Experiment 3: a trained autoencoder", "curve.png")
    intro = (
        f"The model `{MODEL['name']}` ({', '.join(f'{k}={v}' for k, v in MODEL['options'].items())}, {config.size} px) was "
        f"trained for {config.steps} steps (`{config.preset}` preset, batch {config.batch_size}, {seconds:.0f} s here) on "
        "augmented training slices of the template that exclude the test slices. Its reconstruction of each normal test "
        f"slice (resized to {config.size} px, radius scaled with it) replaces the blur; the blur grid it is matched to is "
        "computed on the same resized slices and centres. Run folder: [`model/`](model/)."
    )
    return section.replace("\n\n", f"\n\n{intro}\n\n", 1)


def _section(folder: Path, name: str, title: str, *figures: str) -> str:
    summary = (folder / name / "summary.md").read_text().split("\n", 2)[2].strip()  # drop its own title
    images = " ".join(f"![{f}]({name}/{f})" for f in figures)
    return f"## {title}\n\n{images}\n\n{summary}\n\nFiles: [`{name}/`]({name}/)"


_REPORT = """# blindspot demo: where the residual score goes blind

Reconstruction-based anomaly detection scores each pixel by the residual |x − x̂| between an image and
its "healthy" reconstruction. Reconstructions are never perfect, and the residual of an imperfect
reconstruction of normal tissue competes with the residual of the anomaly. This report simulates the
imperfection with a Gaussian blur of σ (Meissen et al., MIDL 2022) on {n} axial slices of the MNI152
template and measures, for a disk anomaly of radius 20, the average precision (AP) of the residual map.

Reading: AP is ≈ 1 while σ is small; as σ grows, anomalies whose intensity lies where the brain's
histogram has its mass become invisible (dark band), while much darker or brighter anomalies stay
detectable. Histogram equalisation spreads the intensities evenly, and the blind band then covers
almost every intensity. Texture anomalies (which keep the local intensities) behave like a
constant-intensity anomaly at the intensity they are matched to. A trained autoencoder is an
imperfect reconstruction too: its AP curve over the intensities follows the curve of a blur of some σ
(the one it is matched to), with the same blind band where the tissue histogram has its mass.

{sections}

Mean AP over the plain intensity grid: {mean_ap:.3f}. Computed in {seconds:.0f} s.
"""
