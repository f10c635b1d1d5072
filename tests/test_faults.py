"""Nothing lost under faults: a NaN or Inf loss (stop, or skip the step), a failed write (disk full, permission
denied, a read-only folder), and ``kill -9`` in the middle of a checkpoint write or of ``vqkit encode``.

Losses are made non-finite by a decoder wrapper that poisons chosen training steps; write failures are the
``OSError`` the OS gives (monkeypatched into the write, the fsync, the rename or the temporary file's creation);
the kills run in a child process (``tests/kill_during_write.py``) that SIGKILLs itself halfway through a file.
"""

from __future__ import annotations

import datetime
import errno
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

import vqkit
from vqkit import distributed
from vqkit.cli import main
from vqkit.models import build_model, save_tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import ConfigError, load_config
from vqkit.train.files import read_codes, write_codes
from vqkit.train.loop import train
from vqkit.train.report import read_log, write_report
from vqkit.train.run import RunPaths, spawn
from vqkit.utils import atomic, folders

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
TINY = ["train.device=cpu", "train.tensorboard=false", "train.progress=false", "eval.max_items=64"]
TINY += ["train.batch_size=32", "train.eval_every=100", "train.log_every=1", "train.keep_checkpoints=10"]
HELPER = str(ROOT / "tests" / "kill_during_write.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


class Poisoned(nn.Module):
    """``inner``, its output times ``value`` on the training forwards numbered in ``steps`` (1-based), on every
    rank or on rank ``rank`` alone."""

    def __init__(self, inner: nn.Module, steps: set[int], value: float, rank: int | None = None) -> None:
        super().__init__()
        self.inner, self.steps, self.value, self.rank, self.calls = inner, steps, value, rank, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.inner(x)
        self.calls += self.training
        if self.training and self.calls in self.steps and self.rank in (None, distributed.rank()):
            return y * self.value
        return y


Weights = dict[str, torch.Tensor]


def poisoned_run(
    run: Path,
    overrides: list[str],
    steps: set[int],
    value: float = float("nan"),
    part: str = "decoder",
    rank: int | None = None,
) -> tuple[nn.Module, dict[int, Weights], Callable[[], Path]]:
    """The synthetic config's model with its ``part`` poisoned on ``steps``; the parameters after each step
    (filled in as it runs), and the run to start."""
    config = load_config(SYNTHETIC, [*TINY, *overrides])
    net = build_model(dict(config.model))
    setattr(net, part, Poisoned(getattr(net, part), steps, value, rank))
    seen: dict[int, Weights] = {}

    def record(finished: int) -> None:
        seen[finished] = {k: p.detach().clone() for k, p in net.named_parameters()}

    return net, seen, lambda: train(config, run, model=net, on_step=record)


def checkpoint_names(run: Path) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(RunPaths(run).checkpoints)]


def same(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- a NaN or Inf loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_nonfinite_loss_stops_before_the_update_and_keeps_the_last_checkpoint(
    tmp_path: Path, value: float, shown: str
) -> None:
    net, seen, run = poisoned_run(tmp_path, ["train.steps=6", "train.checkpoint_every=2"], {5}, value)
    with pytest.raises(RuntimeError) as caught:
        run()
    assert str(caught.value).startswith(
        f"train: step 5: the loss is not finite (loss/mse={shown}, loss={shown}"
    )
    assert all(
        s in str(caught.value) for s in ("stopped before the update", "step_0000004'", "nonfinite=skip")
    )
    assert checkpoint_names(tmp_path) == ["step_0000002", "step_0000004"]  # nothing of step 5 was saved
    weights = load_file(str(RunPaths(tmp_path).checkpoints / "step_0000004" / "model.safetensors"))
    params = {k: p.detach() for k, p in net.named_parameters()}
    assert same(params, seen[4]) and same(params, {k: weights[k] for k in params})  # step 5 changed nothing
    assert max(step for step, _ in read_log(RunPaths(tmp_path).metrics)[("train", "loss")]) == 4


def test_skip_mode_skips_the_update_counts_and_logs_it(tmp_path: Path) -> None:
    overrides = ["train.steps=6", "train.checkpoint_every=1", "train.nonfinite=skip"]
    _, seen, run = poisoned_run(tmp_path, overrides, {3, 4})
    with pytest.warns(UserWarning) as warned:
        final = run()
    assert [str(w.message) for w in warned] == [
        f"train: step {n}: the loss is not finite (loss/mse=nan, loss=nan); skipped it (no update; {k} in a row, "
        f"{k} in all)"
        for n, k in ((3, 1), (4, 2))
    ]
    assert final.name == "step_0000006"
    assert same(seen[2], seen[3]) and same(seen[2], seen[4])  # no update on the skipped steps
    assert not same(seen[4], seen[5])  # the next good step trains again
    log = read_log(RunPaths(tmp_path).metrics)
    assert log[("train", "nonfinite_skips")] == [(3, 1.0), (4, 2.0), (5, 2.0), (6, 2.0)]
    assert np.isnan(dict(log[("train", "loss/mse")])[3]) and np.isfinite(dict(log[("train", "loss/mse")])[5])


def test_skip_mode_stops_after_max_skips_in_a_row(tmp_path: Path) -> None:
    overrides = ["train.steps=8", "train.checkpoint_every=1", "train.nonfinite=skip", "train.max_skips=3"]
    _, _, run = poisoned_run(tmp_path, overrides, {2, 4, 5, 6})  # step 3 is good: the count starts again
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            RuntimeError, match=r"step 6: .*stopped after 3 skipped steps in a row \(train.max_skips=3\)"
        ),
    ):
        run()
    assert checkpoint_names(tmp_path)[-1] == "step_0000005"


def skip_on_one_rank(run: str) -> None:
    """A DDP worker: rank 1 alone has NaN losses at steps 3 and 4; writes what it saw to ``rank<r>.txt``."""
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a hang fails soon
    _, seen, start = poisoned_run(Path(run), ["train.steps=6", "train.nonfinite=skip"], {3, 4}, rank=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final = start().name
    Path(run, f"rank{distributed.rank()}.txt").write_text(f"{final} {same(seen[2], seen[4])}")


def test_under_ddp_every_rank_skips_when_one_ranks_loss_is_nonfinite(tmp_path: Path) -> None:
    spawn(2, skip_on_one_rank, str(tmp_path))  # a rank skipping its backward alone would hang the other
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["step_0000006 True"] * 2


def test_a_nonfinite_encoder_output_names_the_step(tmp_path: Path) -> None:
    _, _, run = poisoned_run(tmp_path, ["train.steps=4"], {3}, part="encoder")
    with pytest.raises(ValueError, match=r"train: step 3: .*contains NaN or Inf"):
        run()


def test_the_nonfinite_options_are_checked() -> None:
    with pytest.raises(
        ConfigError, match=r"train.nonfinite: expected one of \['stop', 'skip'\], got 'ignore'"
    ):
        load_config(SYNTHETIC, ["train.nonfinite=ignore"])
    with pytest.raises(ConfigError, match="train.max_skips: expected a positive integer, got 0"):
        load_config(SYNTHETIC, ["train.max_skips=0"])


def small_model() -> tuple[nn.Sequential, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_a_checkpoint_is_never_written_from_a_nonfinite_state(tmp_path: Path) -> None:
    model, optimizer = small_model()
    good = ckpt.save_checkpoint(tmp_path, 1, model, optimizer, {})
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        params["1.bias"][0] = float("nan")
    with pytest.raises(
        ValueError, match=r"not saving step 2: tensor '1.bias' of model.safetensors holds NaN"
    ):
        ckpt.save_checkpoint(tmp_path, 2, model, optimizer, {})
    with torch.no_grad():
        params["1.bias"][0] = 0.0
    optimizer.state[params["0.weight"]]["exp_avg"][0, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"tensor 'state/0/exp_avg' of optimizer.safetensors holds NaN or Inf"
    ):
        ckpt.save_checkpoint(tmp_path, 2, model, optimizer, {})
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000001"]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before


# --- a failed write -----------------------------------------------------------------------------------------


def enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def eacces(*args: object, **kwargs: object) -> None:
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(args[0]) if args else None)


def safetensors_full(*args: object, **kwargs: object) -> None:  # what safetensors raises on a full disk
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


FAULTS = {  # where the write fails: (object, attribute, replacement, errno)
    "write": (folders, "save_file", safetensors_full, errno.ENOSPC),
    "fsync": (atomic.os, "fsync", enospc, errno.ENOSPC),
    "rename": (atomic.os, "replace", eacces, errno.EACCES),
    "create": (atomic.tempfile, "mkdtemp", eacces, errno.EACCES),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    model, optimizer = small_model()
    good = ckpt.save_checkpoint(tmp_path, 2, model, optimizer, {})
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    owner, name, replacement, code = FAULTS[fault]
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(OSError, match=r"cannot write '.*step_0000004'.*; it is left as it was") as caught:
        ckpt.save_checkpoint(tmp_path, 4, model, optimizer, {})
    monkeypatch.undo()
    assert caught.value.errno == code and (code != errno.EACCES or isinstance(caught.value, PermissionError))
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000002"]  # no staging folder left either
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    ckpt.load_checkpoint(good, model, optimizer)


@pytest.mark.parametrize(
    ("owner", "name", "replacement"),
    [(Path, "write_bytes", enospc), (atomic.os, "fsync", enospc), (atomic.os, "replace", eacces)],
)
def test_a_failed_report_or_codes_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: object, name: str, replacement: object
) -> None:
    report = write_report(tmp_path, {"mse": 1.0})
    codes = write_codes(tmp_path / "codes.npz", [torch.arange(6).reshape(3, 2)], {"items": [{"source": "a"}]})
    before = {p: p.read_bytes() for p in (report, codes)}
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(OSError, match=r"cannot write '.*report.md': .*; it is left as it was"):
        write_report(tmp_path, {"mse": 2.0})
    with pytest.raises(OSError, match=r"cannot write '.*codes.npz': .*; it is left as it was"):
        write_codes(codes, [torch.zeros(1, 2, dtype=torch.long)], {"items": [{"source": "b"}]})
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (report, codes)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npz", "report.md"]  # no temporary files


def test_an_error_about_another_file_is_not_renamed(tmp_path: Path) -> None:
    def copy_missing(path: Path) -> None:
        path.write_bytes((tmp_path / "missing-input").read_bytes())

    with pytest.raises(FileNotFoundError, match="missing-input") as caught:
        atomic.atomic_write_with(tmp_path / "out.bin", copy_missing)
    assert "cannot write" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_a_quantizer_save_on_a_full_disk_keeps_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = vqkit.save_quantizer(vqkit.VQ(4, 8), tmp_path / "q")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    monkeypatch.setattr(folders, "save_file", safetensors_full)
    with pytest.raises(OSError, match=r"cannot write '.*q' \(weights.safetensors\): No space left") as caught:
        vqkit.save_quantizer(vqkit.VQ(4, 8), path)
    assert caught.value.errno == errno.ENOSPC and [p.name for p in tmp_path.iterdir()] == ["q"]
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_keeps_its_files_and_the_error_names_the_file(tmp_path: Path) -> None:
    model, optimizer = small_model()
    ckpt.save_checkpoint(tmp_path / "run", 2, model, optimizer, {})
    report = write_report(tmp_path / "run", {"mse": 1.0})
    before = report.read_bytes()
    (tmp_path / "run").chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write '.*report.md': Permission denied"):
            write_report(tmp_path / "run", {"mse": 2.0})
        with pytest.raises(PermissionError, match=r"cannot write '.*step_0000004': Permission denied"):
            ckpt.save_checkpoint(tmp_path / "run", 4, model, optimizer, {})
    finally:
        (tmp_path / "run").chmod(0o755)
    assert report.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["report.md", "step_0000002"]


def test_a_failed_encode_write_is_an_error_naming_the_file(
    tokenizer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image, out = image_file(tmp_path), tmp_path / "codes.npz"
    monkeypatch.setattr(atomic.os, "fsync", enospc)
    assert main(["encode", str(tokenizer), str(image), "-o", str(out)]) == 1
    monkeypatch.undo()
    assert f"cannot write {str(out)!r}: No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]


# --- kill -9 in the middle of a write -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    spec = {"name": "image_vqvae", "hidden": 8, "res_hidden": 4, "latent_dim": 4, "downsample": 2}
    model = build_model({**spec, "quantizer": {"name": "vq", "kwargs": {"codebook_size": 8}}})
    return save_tokenizer(model, tmp_path_factory.mktemp("faults") / "tokenizer")


def image_file(folder: Path) -> Path:
    path = folder / "img.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(path)
    return path


def killed(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, HELPER, *args], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_a_kill_during_a_checkpoint_write_leaves_the_old_ones_and_resume_cleans_up(tmp_path: Path) -> None:
    overrides = [*TINY, "train.steps=6", "train.checkpoint_every=2"]
    killed("checkpoint", "4", str(SYNTHETIC), str(tmp_path / "killed"), *overrides)
    checkpoints = RunPaths(tmp_path / "killed").checkpoints
    assert checkpoint_names(tmp_path / "killed") == ["step_0000002"]  # nothing under step_0000004's name
    (staging,) = checkpoints.glob(".step_0000004.*.tmp")  # the half-written file is in the staging folder
    assert (staging / "model.safetensors").stat().st_size > 0
    config = load_config(SYNTHETIC, overrides)
    with one_thread():  # as in the child: the same kernels, so the same bits
        train(config, tmp_path / "killed", resume=True)
        train(config, tmp_path / "straight")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002", "step_0000004", "step_0000006"]
    a, b = (
        load_file(str(RunPaths(tmp_path / r).checkpoints / "step_0000006" / "model.safetensors"))
        for r in ("killed", "straight")
    )
    assert same(a, b)  # the resumed run reaches the uninterrupted run's weights bit for bit


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("earlier", [True, False])
def test_a_kill_during_encode_leaves_the_old_codes_or_nothing(
    tokenizer: Path, tmp_path: Path, earlier: bool
) -> None:
    image, out = image_file(tmp_path), tmp_path / "codes.npz"
    if earlier:
        assert main(["encode", str(tokenizer), str(image), "-o", str(out)]) == 0
    before = out.read_bytes() if earlier else None
    killed("encode", str(tokenizer), str(image), str(out))
    assert (out.read_bytes() if out.exists() else None) == before  # the old complete archive, or nothing
    (leftover,) = tmp_path.glob(".codes.npz.*.tmp")  # the half-written archive, under a hidden name
    assert leftover.stat().st_size > 0
    assert main(["encode", str(tokenizer), str(image), "-o", str(out)]) == 0  # the next run ignores it
    codes, meta = read_codes(out)
    assert meta["items"][0]["source"] == "img.png" and codes[0].dtype == torch.int64
    if before is not None:
        assert out.read_bytes() == before
