"""The README's examples, verbatim and in order, through ``blindspot.cli.main``.

Every ``.venv/bin/blindspot ...`` line of the README's ``bash`` blocks runs in a temporary working
folder where the data they name exist as tiny layouts (``data/BraTS2021``, the MOOD folder
``/data/mood/brain``, replaced by a temporary folder, maps, an ONNX net, a model factory,
reconstructions). Every command must exit 0 without a traceback. Where a command takes minutes on
2 cores, its work is cut, never its options (:func:`_cheaper`): training (the presets ``pitfalls`` and
``ae4ad`` are GPU-sized, ``quick`` takes a minute) stops after one step (resuming after one more), a
sweep trains its first two d twice, and an audit (10–30 s each) runs on a 5 × 3 grid; everything
else runs exactly as written.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from blindspot.cli import main

from eval_fixtures import brain_slice, make_brats2021, make_maps, save_nifti

README = Path(__file__).resolve().parents[1] / "README.md"
MOOD = "/data/mood/brain"

#: Commands whose training is GPU-sized (a fragment of the command): they run with one training step.
GPU_SIZED = ("train ", "sweep latent")


def readme_commands() -> list[str]:
    """Every ``blindspot`` command of the README's bash blocks, in order, without its comment."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    return [shlex.join(shlex.split(line, comments=True)) for block in blocks for line in block.splitlines()
            if line.startswith(".venv/bin/blindspot ")]


def test_the_readme_commands_are_found():
    commands = readme_commands()
    assert len(commands) == 24 and all(c.startswith(".venv/bin/blindspot ") for c in commands)
    assert {c.split()[1] for c in commands} == {"pitfalls", "list-models", "train", "sweep", "audit", "evaluate", "compare"}


def _mood(root: Path) -> Path:
    """Five healthy 64 × 64 × 141 volumes (MOOD layout: 3 train, 2 test; the protocol's slices 120–139 and 128 exist)."""
    rng = np.random.default_rng(0)
    for k in range(5):
        save_nifti(root / f"case_{k}.nii", np.stack([brain_slice(rng, 64) for _ in range(141)], -1).astype(np.float32))
    return root


def _onnx(path: Path) -> None:
    """A 64-px ONNX model: a 3 × 3 average (an imperfect reconstruction)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 64, 64])
    blur = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = helper.make_model(helper.make_graph([blur], "blur", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


FACTORY = '''import torch


def build():
    """A tiny network: a 3 x 3 convolution."""
    return torch.nn.Conv2d(1, 1, 3, padding=1)
'''


def _factory(root: Path) -> None:
    (root / "mynets").mkdir()
    (root / "mynets" / "__init__.py").write_text("")
    (root / "mynets" / "unet.py").write_text(FACTORY)
    torch.manual_seed(0)
    torch.save(torch.nn.Conv2d(1, 1, 3, padding=1).state_dict(), root / "unet.pt")


def _reconstructions(folder: Path) -> None:
    """Blurred copies of the images ``audit --size 128`` audits (the embedded test slices), named as it reads them."""
    from scipy.ndimage import gaussian_filter

    from blindspot.data import DataConfig, load
    from blindspot.models.adapters import reconstruction_key

    folder.mkdir()
    images = load(DataConfig().with_preparation(size=128), default_split="test").normal()
    for name, image in zip(images.names, images.images):
        np.save(folder / f"{reconstruction_key(name)}.npy", gaussian_filter(image, 1.0).astype(np.float32))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The working folder the README's commands run in, with every input they name."""
    monkeypatch.chdir(tmp_path)
    make_brats2021(tmp_path / "data" / "BraTS2021")
    _mood(tmp_path / "mood")
    maps = make_maps(tmp_path / "evaluate")
    for name, target in (("maps", "maps"), ("labels", "labels"), ("masks", "brains")):
        maps[name].rename(tmp_path / target)
    _onnx(tmp_path / "net.onnx")
    _factory(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _cheaper(args: list[str], patched: pytest.MonkeyPatch) -> list[str]:
    """The command's arguments, with its work cut where it takes minutes on 2 cores (module docstring)."""
    import blindspot.experiments.sweep as sweep
    import blindspot.training as training

    make_config, resume_run, sweep_latent = training.make_config, training.resume_run, sweep.sweep_latent

    def one_step(preset="quick", **overrides):
        small = {"batch_size": 2} if preset == "pitfalls" else {}  # 256 px, batch 128: one step alone takes minutes
        return make_config(preset, **{**overrides, "steps": 1, **small})

    if args[0] == "train":
        patched.setattr(training, "make_config", one_step)
        patched.setattr(training, "resume_run", lambda run, steps=None, **kw: resume_run(run, steps=2, **kw))
    if args[0] == "sweep":
        patched.setattr(sweep, "make_config", one_step)
        patched.setattr(sweep, "sweep_latent", lambda out, *, dims, repeats, **kw:
                        sweep_latent(out, dims=sweep.parse_dims(dims)[:2], repeats=min(repeats, 2), **kw))
    if args[0] == "audit":
        return [*args, "--n-intensities", "5", "--n-sigmas", "3"]
    return args


def test_every_readme_example_runs_as_written(workdir, monkeypatch, capsys):
    for command in readme_commands():
        args = shlex.split(command.replace(MOOD, str(workdir / "mood")))[1:]
        with monkeypatch.context() as patched:
            args = _cheaper(args, patched)
            if args[:2] == ["pitfalls", "intensity"] and "--centers" in args:
                np.savetxt("their_centres.csv", np.load("runs/exp1/results.npz")["centers"], fmt="%d", delimiter=",")
            if "--reconstructions" in args:
                _reconstructions(Path("recon"))
            code = main(args)
        captured = capsys.readouterr()
        assert code == 0, f"{command}\n{captured.err}"
        assert "Traceback" not in captured.err
