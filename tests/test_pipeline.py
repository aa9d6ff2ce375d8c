"""``SingPipeline`` (the Python API) and ``singexp restore`` (its command line): the API
restores as the evaluation does, and the command line saves what the API returns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from singexp.errors import SingexpError
from singexp.instantiate import build
from singexp.metrics import ImageMetrics
from singexp.modules.restoration import BASELINE, ORIGINAL, RestorationModule
from singexp.pipeline import (
    GRID_FILE,
    PIPELINE_FILE,
    TENSORS_FILE,
    SingPipeline,
    SingPipelineOutput,
    output_names,
)
from singexp.visualize import to_uint8

METHODS = ("sing_zero", "sing_inn")
# 5 steps, batches of 4: two batches of the 8 test images, so the batch index is exercised
SMALL = [
    "+experiment=sing_inn",
    "logger=none",
    "dataset.batch_size=4",
    *(f"methods.{m}.{k}" for m in METHODS for k in ("steps=5", "progress=false")),
]
QUICK = ["+experiment=sing_inn", "quick=true", "logger=none", "print_config=false"]


@pytest.fixture(scope="module")
def pipe() -> SingPipeline:
    return SingPipeline.from_config(SMALL)


def test_api_restores_as_the_evaluation_does(pipe: SingPipeline) -> None:
    """The same seeding as RestorationModule: its test steps on the test set give the API's
    tensors, batch by batch (channel noise and sampler noise per (seed, batch index))."""
    stage = pipe._stage(None, pipe.snr_db)
    datamodule = build(pipe.run.data.spec)
    datamodule.setup()
    x = datamodule.test_images(8)
    module = RestorationModule(
        stage.codec,
        stage.restorers,
        networks=stage.networks,
        snr_db=pipe.snr_db,
        metrics=ImageMetrics.from_config({"stlpips": False, "lpips": False, "swd": False}),
        seed=pipe.seed,
        grid_images=8,
    )
    module.on_test_epoch_start()
    for batch_idx in range(2):
        module.test_step(x[4 * batch_idx : 4 * batch_idx + 4], batch_idx)
    module.on_test_epoch_end()  # the batches in order (gathered under DDP), grid and summary
    expected = module.grid_rows()
    out = pipe(x)
    assert list(out) == [ORIGINAL, BASELINE, *METHODS]
    for name, images in out.items():
        assert images.shape == (8, 3, 32, 32) and images.abs().max() <= 1, name
        assert torch.equal(images, expected[name]), name
    # another seed is another restoration: the comparison above can fail
    assert not torch.equal(pipe(x, seed=1)["sing_inn"], out["sing_inn"])


def objects_pipeline(reference: SingPipeline, **settings: object) -> SingPipeline:
    """The reference's settings built from objects loaded by the project's own loaders (not the
    reference's objects): the codec and INN files, the embedded prior, a scheduler of the prior
    group's schedule, A from the operator group, the methods' config nodes."""
    from singexp.config import EMBEDDED_JSCC_DIR
    from singexp.models.inn import load_inn
    from singexp.models.jscc import load_codec
    from singexp.models.prior import load_prior
    from singexp.operators import build_operator
    from singexp.samplers.schedulers import build_scheduler

    run = reference.run
    assert run is not None
    name = f"{run.bcr.numerator}_{run.bcr.denominator}"
    prior, op = run.prior, run.operator
    assert prior is not None and op is not None
    schedule = {k: getattr(prior, k) for k in ("num_train_timesteps", "beta_start", "beta_end")}
    return SingPipeline(
        codec=load_codec(EMBEDDED_JSCC_DIR / f"jscc_{name}.safetensors"),
        prior=load_prior("embedded", expected_size=32),
        scheduler=build_scheduler(**schedule, schedule=prior.schedule),
        operator=build_operator(op.name, op.scale, run.bcr, 32, **op.options),
        methods={m: dict(method.raw) for m, method in run.methods.items()},
        inn=load_inn(EMBEDDED_JSCC_DIR.parent / "inn_shapes32" / f"inn_{name}.safetensors"),
        snr_db=reference.snr_db,
        seed=reference.seed,
        batch_size=reference.batch_size,
        **settings,  # type: ignore[arg-type]
    )


def test_pipeline_from_objects_restores_as_from_config(pipe: SingPipeline) -> None:
    """The constructor from objects (the primary path) gives from_config's images, and the
    output is a SingPipelineOutput that still reads as a mapping."""
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mine = objects_pipeline(pipe)(x, seed=2)
    theirs = pipe(x, seed=2)
    assert isinstance(mine, SingPipelineOutput)
    assert list(mine.images) == list(theirs) == [ORIGINAL, BASELINE, *METHODS]
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=1e-6)
    assert mine.ran["sing_inn"]["steps"] == 5 and mine.ran["sing_inn"]["name"] == "sing_inn"
    assert mine.ran == theirs.ran  # what ran, as metrics.json's samplers records it


def test_save_pretrained_round_trips(pipe: SingPipeline, tmp_path: Path) -> None:
    """save_pretrained writes every component with its config; from_pretrained loads it offline
    into a pipeline that restores identically."""
    folder = pipe.save_pretrained(tmp_path / "saved")
    for part in (
        PIPELINE_FILE,
        "codec.safetensors",
        "inn.safetensors",
        "prior/config.json",
        "prior/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "mean_image.safetensors",
    ):
        assert (folder / part).is_file(), part
    loaded = SingPipeline.from_pretrained(folder)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    before, after = pipe(x, seed=5), loaded(x, seed=5)
    assert list(before) == list(after)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert after.ran == before.ran and loaded.trained_on == pipe.trained_on
    assert torch.equal(loaded.mean_image(), pipe.mean_image())  # type: ignore[arg-type]


def test_api_takes_another_bcr_and_checks_tensor_shape(pipe: SingPipeline) -> None:
    x = torch.zeros(2, 3, 32, 32)
    out = pipe(x, snr_db=1.0, bcr="1/192", seed=0)
    assert {name: tuple(t.shape) for name, t in out.items()} == {
        name: (2, 3, 32, 32) for name in (ORIGINAL, BASELINE, *METHODS)
    }
    assert not torch.equal(out[BASELINE], pipe(x, snr_db=1.0)[BASELINE])  # another codec
    with pytest.raises(SingexpError, match=r"\(N, C, 32, 32\)"):
        pipe(torch.zeros(1, 3, 40, 40))


def _write_images(folder: Path) -> list[Path]:
    """An RGB PNG of another size and shape, a 16-bit grey PNG, an RGBA PNG."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = folder / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(rgb)
    grey = folder / "grey16.png"
    Image.fromarray(rng.integers(0, 65536, (36, 36), dtype=np.uint16)).save(grey)
    rgba = folder / "alpha.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(rgba)
    return sorted([rgb, grey, rgba])


@pytest.mark.slow
def test_restore_cli_writes_what_the_api_returns(tmp_path: Path) -> None:
    files = _write_images(tmp_path / "images")
    out = tmp_path / "out"
    result = run_cli(
        "restore",
        str(tmp_path / "images"),
        *QUICK,
        "channel.snr_db=-5",
        "seed=3",
        f"out={out}",
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},  # as this process (conftest): the same float sums
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resized (shorter side) and centre-cropped to 32×32 px" in result.stdout
    names = output_names(files)
    for name in names:
        for method in (ORIGINAL, BASELINE, *METHODS):
            with Image.open(out / f"{name}_{method}.png") as image:
                assert image.size == (32, 32) and image.mode == "RGB"
    with Image.open(out / GRID_FILE) as grid:
        assert grid.size[0] > 100
    saved = torch.load(out / TENSORS_FILE)
    assert saved["files"] == [str(f) for f in files] and saved["seed"] == 3

    # one thread, as the command above (threads=auto would take the cores: other float sums)
    api = SingPipeline.from_config([*QUICK, "channel.snr_db=-5", "threads=1"])
    mine = api(files, snr_db=-5.0, seed=3)
    assert list(mine) == list(saved["images"]) == [ORIGINAL, BASELINE, *METHODS]
    # built from objects (the project's loaders, not from_config's): the CLI's numbers too
    objects = objects_pipeline(api, threads=1)(files, snr_db=-5.0, seed=3)
    for method, images in objects.items():
        torch.testing.assert_close(images, saved["images"][method], rtol=0, atol=1e-6)
    for method, images in mine.items():
        assert torch.equal(images, saved["images"][method]), method
        for i, name in enumerate(names):  # the PNGs hold the same values, quantised
            png = np.asarray(Image.open(out / f"{name}_{method}.png"))
            assert np.array_equal(png, to_uint8(images[i : i + 1])[0]), (method, name)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["missing", "not_an_image"])
def test_restore_cli_bad_input_is_one_line_exit_2(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.png"
    if what == "not_an_image":
        path.write_text("not a png")
    result = run_cli("restore", str(path), "+experiment=sing_inn", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("singexp: error: ") and str(path) in lines[0]
    assert not (tmp_path / "outputs").exists()  # nothing was run, no run folder
    assert "Traceback" not in result.stdout + result.stderr
    assert os.listdir(tmp_path) == (["x.png"] if what == "not_an_image" else [])


def _photo(folder: Path) -> Path:
    """scikit-image's astronaut photo as a PNG: other data than the shipped models' shapes."""
    from skimage import data

    folder.mkdir(exist_ok=True)
    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_pipeline_says_out_of_distribution_in_one_line(
    pipe: SingPipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Image files of other data than the models' training data (recorded: shapes) get one
    out-of-distribution line, logged and in the output; a test-set tensor gets none."""
    with caplog.at_level("WARNING", logger="singexp"):
        out = pipe([_photo(tmp_path)])
    ood = [n for n in out.notices if n.startswith("out of distribution")]
    assert len(ood) == 1 and "generated shapes" in ood[0] and "\n" not in ood[0]
    assert ood[0] in caplog.text
    assert pipe.trained_on["jscc"] == "shapes" and pipe.mean_image() is not None
    x = torch.zeros(1, 3, 32, 32)
    assert not [n for n in pipe(x).notices if n.startswith("out of distribution")]


def test_below_trivial_baseline_is_measured(pipe: SingPipeline) -> None:
    """The mean training image given as an image scores infinite PSNR: DeepJSCC is below it."""
    mean = pipe.mean_image()
    assert mean is not None
    out = pipe(mean.unsqueeze(0))
    below = [n for n in out.notices if "below the trivial baseline" in n]
    assert len(below) == 1 and "1 of 1 images" in below[0]


@pytest.mark.slow
def test_restore_cli_says_out_of_distribution_and_writes_its_log(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "images")
    out = tmp_path / "out"
    result = run_cli("restore", str(photo), *QUICK, f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "out of distribution" in line
    ]
    assert len(lines) == 1 and "generated shapes" in lines[0], result.stdout + result.stderr
    log = (out / "restore.log").read_text()
    assert "out of distribution" in log  # restore.log is written
    assert "astronaut: PSNR" in log and "restored 1 images in" in log
