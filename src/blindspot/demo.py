"""The main job (``make demo``): the residual-pitfall experiments on the embedded MNI152 data, one report.

It runs experiment 1 on the plain and on the histogram-equalised slices and experiment 2 matched to
the plain grid, trains a small autoencoder on the template's training slices and runs experiment 3
with it (its AP curve matched to a blur σ), ends with ``blindspot audit`` of that model (its HTML
report in ``audit/report.html``), and writes ``report.md`` linking every figure and table by paths
relative to the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from blindspot.data import DataConfig
from blindspot.experiments.runs import experiment_images, write_intensity, write_model, write_texture
from blindspot.models.checkpoint import load_model
from blindspot.results import check_output, result_folder, write_text
from blindspot.training import make_config, train

GRID = dict(radius=20, n_intensities=100, n_sigmas=100, sigma_max=5.0, seed=0, save_inputs=False)
#: The demo's trained model: the MIDL 2022 dense AE at 64 px, the ``quick`` preset cut to 200 steps
#: (about 20 s on 2 idle CPU cores; several times that when the cores are shared).
MODEL = dict(name="ae", options={"d": 32}, preset="quick", overrides={"size": 64, "steps": 200})


def run_demo(out: str | Path = "demo-report", *, overwrite: bool = False, threads: int | None = None) -> Path:
    """Write the demo report folder and return the path of its ``report.md``."""
    check_output(out, overwrite=overwrite, fingerprint="demo")
    started = time.perf_counter()
    plain_config, equalized_config = DataConfig(), DataConfig().with_preparation(equalize=True)
    plain = experiment_images(plain_config)
    with result_folder(out, overwrite=overwrite, fingerprint="demo") as folder:
        for name, config in (("intensity", plain_config), ("intensity-equalized", equalized_config)):
            (folder / name).mkdir(exist_ok=True)
            imageset = plain if config == plain_config else experiment_images(config)
            exp1 = write_intensity(folder / name, imageset, GRID, threads=threads)
            if name == "intensity":
                plain_ap = exp1["ap"]
        (folder / "texture").mkdir(exist_ok=True)
        write_texture(folder / "texture", plain, GRID, match=folder / "intensity",
                      threads=threads)
        model_section = _model_experiment(folder, threads)
        audit_section = _audit(folder, threads)
        sections = [
            _section(folder, "intensity", "Experiment 1: anomaly intensity × reconstruction error", "heatmap.png", "histogram.png"),
            _section(folder, "intensity-equalized", "Experiment 1 after histogram equalisation", "heatmap.png", "histogram.png"),
            _section(folder, "texture", "Experiment 2: texture anomalies", "textures.png"),
            model_section,
            audit_section,
        ]
        write_text(folder / "report.md", _REPORT.format(n=len(plain), sections="\n\n".join(sections),
                                                         seconds=time.perf_counter() - started, mean_ap=plain_ap.mean()))
    return Path(out) / "report.md"


def _model_experiment(folder: Path, threads: int | None) -> str:
    """Train :data:`MODEL` into ``folder/model``, run experiment 3 on its last checkpoint, return the report section.

    An interrupted demo continues the training where it stopped (the run folder lives in the
    demo's staging folder).
    """
    config = make_config(MODEL["preset"], **MODEL["overrides"])
    started = time.perf_counter()
    run = train(config, folder / "model", model_name=MODEL["name"], model_options=MODEL["options"],
                resume=(folder / "model").exists(), device="cpu")
    seconds = time.perf_counter() - started
    model = load_model(run / "last.pt", device="cpu")
    data = DataConfig().prepared_like(model.preparation, what="the demo model")
    (folder / "model-pitfalls").mkdir(exist_ok=True)
    parameters = {"checkpoint": "../model/last.pt", "reconstruct": "normal", "batch_size": 64, **GRID}
    write_model(folder / "model-pitfalls", experiment_images(data), parameters, model=model, checkpoint="../model/last.pt",
                checkpoint_file=run / "last.pt", device="cpu", threads=threads)
    section = _section(folder, "model-pitfalls", "Experiment 3: a trained autoencoder", "curve.png")
    intro = (
        f"The model `{MODEL['name']}` ({', '.join(f'{k}={v}' for k, v in MODEL['options'].items())}, {config.size} px) was "
        f"trained for {config.steps} steps (`{config.preset}` preset, batch {config.batch_size}, {seconds:.0f} s here) on "
        "augmented training slices of the template that exclude the test slices. Its reconstruction of each normal test "
        f"slice (prepared at {config.size} px, the radius scaled with it) replaces the blur; the blur grid it is matched to "
        "is computed on the same prepared slices and centres. Run folder: [`model/`](model/)."
    )
    return section.replace("\n\n", f"\n\n{intro}\n\n", 1)


def _audit(folder: Path, threads: int | None) -> str:
    """``blindspot audit`` of the demo's trained model into ``folder/audit``; returns the report section."""
    from blindspot.experiments.audit_runs import run_audit

    grid = {key: GRID[key] for key in ("radius", "n_intensities", "n_sigmas", "sigma_max", "seed")}  # the demo's full grid
    report = run_audit(folder / "audit", folder / "model" / "last.pt", DataConfig(), overwrite=True, threads=threads,
                       device="cpu", label="model/last.pt (the demo's autoencoder)", **grid)
    summary = (folder / "audit" / "summary.md").read_text().split("## Verdict", 1)[1].split("## ", 1)[0].strip()
    return ("## Audit of the trained autoencoder: its blind spots and the scores that close them\n\n"
            "`blindspot audit` of the model above on the same test slices: AP over the anomaly intensity with the model "
            "reconstructing the normal and the anomalous image, texture anomalies, anomaly sizes and seven scoring "
            f"functions. Verdict:\n\n{summary}\n\nReport: [`audit/report.html`](audit/{report.name}) (one self-contained "
            "page); files: [`audit/`](audit/)")


def _section(folder: Path, name: str, title: str, *figures: str) -> str:
    summary = (folder / name / "summary.md").read_text().split("\n", 2)[2].strip()  # drop its own title
    images = " ".join(f"![{f}]({name}/{f})" for f in figures)
    return f"## {title}\n\n{images}\n\n{summary}\n\nFiles: [`{name}/`]({name}/)"


_REPORT = """# blindspot demo: where the residual score goes blind

Reconstruction-based anomaly detection scores each pixel by the residual |x − x̂| between an image and
its "healthy" reconstruction. Reconstructions are never perfect, and the residual of an imperfect
reconstruction of normal tissue competes with the residual of the anomaly. This report simulates the
imperfection with a Gaussian blur of σ (Meissen et al., MIDL 2022) on {n} axial slices of the MNI152
template and measures, for a disk anomaly of radius 20 px, the average precision (AP) of the residual map.

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
