"""Real faults: two processes on one folder, Ctrl-C, a full disk, a cut checkpoint, a missing accelerator.

Two processes are real processes (``subprocess``); a full disk is ``OSError(ENOSPC)``
injected at the write, after part of the bytes went out, as a full disk does.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labecg import cli
from labecg.train import TrainConfig, train
from labecg.util import LOCK_NAME, FolderInUse, folder_lock

LABECG = str(Path(sys.executable).with_name("labecg"))
TINY = ["--epochs", "1", "--d-model", "16", "--n-layers", "1", "--dropout", "0", "--batch-size", "16",
        "--max-steps-per-epoch", "1", "--accelerator", "cpu", "--seed", "3"]


def _tiny(cohort, run, epochs=1, **kw) -> TrainConfig:
    return TrainConfig(cohort_dir=cohort, run_dir=run, epochs=epochs, d_model=16, n_layers=1, dropout=0.0,
                       batch_size=16, max_steps_per_epoch=1, accelerator="cpu", seed=3, **kw)


@pytest.fixture
def one_epoch_run(tiny_run) -> Path:
    """The shared tiny run of one epoch (copy it before changing it)."""
    return tiny_run


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until killed; returns once it holds it."""
    script = ("import sys, time\nfrom labecg.util import folder_lock\n"
              "with folder_lock(sys.argv[1], 'holder'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _error_lines(stderr: str, command: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"labecg {command}:")]


# ---------------------------------------------------------------------------- case 3: the lock


@pytest.mark.slow  # two training processes: minutes on a loaded machine
def test_a_second_train_on_a_run_folder_in_use_exits_at_once_and_ctrl_c_says_how_to_resume(signals_dir, tmp_path):
    run = tmp_path / "run"
    # trains until interrupted (no race between the last epoch and Ctrl-C)
    first_cmd = [LABECG, "train", "--cohort-dir", str(signals_dir), "--run-dir", str(run), *TINY, "--epochs", "1000000"]
    # Ctrl-C as at a terminal: a test run started in the background (`make test &`, a CI job)
    # hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt
    first = subprocess.Popen(first_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()[-3000:]
            time.sleep(0.2)
        settings = (run / "run_settings.json").read_bytes()
        # the second process: --no-resume would empty the folder under the first
        second = subprocess.run([LABECG, "train", "--cohort-dir", str(signals_dir), "--run-dir", str(run), *TINY,
                                 "--no-resume"], capture_output=True, text=True, timeout=240)
        assert second.returncode == 1, second.stderr[-3000:]
        lines = _error_lines(second.stderr, "train")
        assert len(lines) == 1, second.stderr[-3000:]
        assert f"pid {first.pid} on host {socket.gethostname()}" in lines[0] and str(run) in lines[0], lines
        assert (run / "run_settings.json").read_bytes() == settings and (run / "checkpoints" / "last.ckpt").exists()
        assert first.poll() is None  # the first run trains on

        # case 5: Ctrl-C
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130, err[-3000:]
        lines = _error_lines(err, "train")
        assert len(lines) == 1 and "interrupted at epoch" in lines[0], err[-3000:]
        assert "rerun the same command to resume" in lines[0]
        assert not (run / LOCK_NAME).exists()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_live_lock_is_refused_a_dead_one_taken_over_and_another_hosts_needs_break_lock(tmp_path, caplog):
    folder = tmp_path / "folder"
    holder = _hold_lock(folder)
    try:
        with pytest.raises(FolderInUse, match=f"pid {holder.pid} on host {socket.gethostname()}"):
            with folder_lock(folder, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the killed holder left its lock file behind: a dead process on this host, taken over
    left = json.loads((folder / LOCK_NAME).read_text())
    assert left["pid"] == holder.pid and left["command"] == "holder"
    with caplog.at_level("INFO", logger="labecg"):
        with folder_lock(folder, "third") as path:
            mine = json.loads(path.read_text())
            assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
            assert set(mine) == {"pid", "host", "started", "command"}
    assert "taking over" in caplog.text and str(holder.pid) in caplog.text
    assert not (folder / LOCK_NAME).exists()
    # a lock written on another host cannot be checked from here
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere-node-7", "started": "x",
                                                "command": "labecg train"}))
    with pytest.raises(FolderInUse, match="pid 1 on host elsewhere-node-7.*--break-lock"):
        with folder_lock(folder, "fourth"):
            pass
    with folder_lock(folder, "fifth", break_lock=True) as path:
        assert json.loads(path.read_text())["command"] == "fifth"


def test_break_lock_is_one_name_from_flag_to_config_and_takes_another_hosts_lock(one_epoch_run, signals_dir,
                                                                                  tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    (run / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "elsewhere-node-7", "started": "x",
                                             "command": "labecg train"}))
    argv = ["train", "--cohort-dir", str(signals_dir), "--run-dir", str(run), *TINY]
    assert cli.main(argv) == 1
    lines = _error_lines(capsys.readouterr().err, "train")
    assert len(lines) == 1 and "pid 4242 on host elsewhere-node-7" in lines[0] and "--break-lock" in lines[0]
    assert cli.config_from_args(TrainConfig, argv[1:] + ["--break-lock"]).break_lock is True
    assert cli.main(argv + ["--break-lock"]) == 0
    assert not (run / LOCK_NAME).exists()


def test_signals_refuses_a_cohort_folder_in_use(tmp_path, signals_dir, synthetic_root):
    from labecg.signals import SignalsConfig, convert_signals

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    shutil.copy(signals_dir / "cohort.parquet", cohort / "cohort.parquet")
    holder = _hold_lock(cohort)
    try:
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            convert_signals(SignalsConfig(cohort_dir=cohort, ecg=synthetic_root / "mimic-iv-ecg"))
        assert sorted(p.name for p in cohort.iterdir()) == sorted(["cohort.parquet", LOCK_NAME])
    finally:
        holder.kill()
        holder.wait()


class _CtrlC(__import__("pytorch_lightning").Callback):
    """Ctrl-C as Lightning sees it: a KeyboardInterrupt in the middle of an epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_ctrl_c_during_train_says_the_epoch_and_how_to_resume(one_epoch_run, signals_dir, tmp_path, capsys,
                                                               monkeypatch):
    from labecg import train as train_module

    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    real = train_module.train
    monkeypatch.setattr(train_module, "train", lambda cfg: real(cfg, callbacks=(_CtrlC(1),)))
    try:
        rc = cli.main(["train", "--cohort-dir", str(signals_dir), "--run-dir", str(run), *TINY, "--epochs", "3"])
    except SystemExit as e:  # today's main: Lightning's sys.exit(1)
        rc = e.code
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    err = capsys.readouterr().err
    assert rc == 130, err[-2000:]
    lines = _error_lines(err, "train")
    assert lines == [f"labecg train: interrupted at epoch 1 ({run / 'checkpoints' / 'last.ckpt'} holds epochs 0-0); "
                     f"rerun the same command to resume"], err[-2000:]
    assert not (run / LOCK_NAME).exists()


# ---------------------------------------------------------------------------- case 6: no such accelerator


@pytest.mark.parametrize("accelerator", ["gpu", "tpu"])
def test_an_absent_accelerator_is_one_line_with_the_choices(accelerator, signals_dir, tmp_path, capsys, monkeypatch):
    import pytorch_lightning.accelerators as acc

    cls = {"gpu": acc.CUDAAccelerator, "tpu": acc.XLAAccelerator}[accelerator]
    if cls.is_available():
        pytest.skip(f"this machine has a {accelerator}")
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    argv = ["train", "--cohort-dir", str(signals_dir), "--run-dir", str(tmp_path / "run"), *TINY,
            "--accelerator", accelerator]
    try:
        rc = cli.main(argv)
    except Exception as e:  # today's main: Lightning's traceback
        pytest.fail(f"{type(e).__name__} escaped: {e}")
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"--accelerator {accelerator}" in lines[0] and "cpu" in lines[0], err
    # what was looked for is named: CUDA for a GPU, torch_xla for a TPU
    import importlib.util
    expect = ("CUDA" if accelerator == "gpu" else
              "torch_xla " + ("installed" if importlib.util.find_spec("torch_xla") else "not installed"))
    assert expect in lines[0] and (accelerator == "gpu" or "CUDA" not in lines[0]), lines[0]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- case 2: checkpoints


def test_a_cut_last_checkpoint_is_named_on_resume_with_the_ways_on(one_epoch_run, signals_dir, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    last = run / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    last.write_bytes(whole[:len(whole) * 2 // 5])  # what a full disk left of it
    assert cli.main(["train", "--cohort-dir", str(signals_dir), "--run-dir", str(run), *TINY, "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err, "train")
    assert len(lines) == 1, err[-3000:]
    assert str(last) in lines[0] and "--no-resume" in lines[0] and "best.ckpt" in lines[0], lines
    assert last.stat().st_size == len(whole) * 2 // 5  # nothing changed


class _DiskFills:
    """``open`` whose binary writes fail with ENOSPC once ``quota`` bytes went out, recording the paths."""

    def __init__(self, quota: int):
        self.quota, self.written, self.paths = quota, 0, []
        self.real_open = builtins.open

    def __call__(self, file, mode="r", *args, **kwargs):
        f = self.real_open(file, mode, *args, **kwargs)
        if "b" not in mode or not any(c in mode for c in "wax+"):
            return f
        self.paths.append(Path(os.fsdecode(file)) if not isinstance(file, int) else None)
        outer = self

        class Faulty:
            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                room = outer.quota - outer.written
                if len(data) > room:
                    f.write(bytes(memoryview(data)[:max(room, 0)]))
                    outer.written = outer.quota
                    raise OSError(errno.ENOSPC, "No space left on device")
                outer.written += len(data)
                return f.write(data)

        return Faulty()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_names_the_file(one_epoch_run, signals_dir,
                                                                                    tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    fills = _DiskFills(quota=40960)
    monkeypatch.setattr(builtins, "open", fills)
    with pytest.raises(OSError) as info:
        train(_tiny(signals_dir, run, epochs=2))  # resumes; its first checkpoint meets the full disk
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "ckpt" in message and str(run / "checkpoints") in message and "free" in message, message
    assert len(message.splitlines()) == 1
    # written inside the run folder (renamed into place), never in the system temp folder
    assert fills.paths and all(run in p.parents for p in fills.paths if p is not None), fills.paths
    after = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert after == before  # the previous checkpoints, whole; no partial file beside them
    torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------------- signals: cases 1 and 4


@pytest.fixture
def converted(signals_dir, synthetic_root, tmp_path) -> tuple[Path, Path]:
    """A copy of the shared converted cohort folder, and its ECG root."""
    cohort = tmp_path / "cohort"
    shutil.copytree(signals_dir, cohort)
    return cohort, synthetic_root / "mimic-iv-ecg"


def _outputs(cohort: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cohort.iterdir()) if p.is_file()}


def test_a_typo_in_ecg_then_overwrite_deletes_nothing(converted, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    cohort, _ = converted
    before = _outputs(cohort)
    nope = tmp_path / "nope"
    for extra in ([], ["--overwrite"], ["--replace-stale"]):
        assert cli.main(["signals", "--cohort-dir", str(cohort), "--ecg", str(nope), *extra]) == 1
        lines = _error_lines(capsys.readouterr().err, "signals")
        assert len(lines) == 1 and f"--ecg {nope}: not a folder" in lines[0], (extra, lines)
        assert "rerun with --overwrite" not in lines[0]
        assert _outputs(cohort) == before
    # a folder that exists but holds none of the records: a typo too, never a "changed input"
    wrong = tmp_path / "other"
    wrong.mkdir()
    assert cli.main(["signals", "--cohort-dir", str(cohort), "--ecg", str(wrong)]) == 1
    lines = _error_lines(capsys.readouterr().err, "signals")
    assert len(lines) == 1 and "a typo in --ecg?" in lines[0] and "missing file" in lines[0], lines
    assert cli.main(["signals", "--cohort-dir", str(cohort), "--ecg", str(wrong), "--overwrite"]) == 1
    lines = _error_lines(capsys.readouterr().err, "signals")
    assert len(lines) == 1 and "Nothing was deleted" in lines[0], lines
    # it names every signal output it kept, each present in the folder
    kept = [n for n in before if n.startswith("signals")]
    assert {"signals.npy", "signals.json", "signals_manifest.parquet", "signals_stats.json"} <= set(kept)
    assert all(n in lines[0] for n in kept), (kept, lines)
    assert _outputs(cohort) == before


def test_signals_checks_free_space_before_converting(converted, monkeypatch, capsys):
    from labecg import util

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    cohort, ecg = converted
    n = len(__import__("pandas").read_parquet(cohort / "cohort.parquet"))
    for name in ("signals.npy", "signals.json", "signals_manifest.parquet", "signals_stats.json"):
        (cohort / name).unlink()
    real = shutil.disk_usage
    free = 5000
    monkeypatch.setattr(util.shutil, "disk_usage", lambda p: real(p)._replace(free=free))
    assert cli.main(["signals", "--cohort-dir", str(cohort), "--ecg", str(ecg)]) == 1
    lines = _error_lines(capsys.readouterr().err, "signals")
    need = n * 1000 * 12 * 2  # float16
    assert len(lines) == 1 and str(cohort) in lines[0] and f"({free} bytes) free" in lines[0], lines
    got = int(lines[0].split(" bytes), ")[0].rsplit("(", 1)[1])
    assert need <= got <= need + (2 << 20) + 256 * n, (need, got)
    assert not [p for p in cohort.iterdir() if p.name.startswith(("signals", ".signals"))]


def test_a_full_disk_at_the_signal_array_is_one_line_and_leaves_nothing(converted, monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    cohort, ecg = converted
    for name in ("signals.npy", "signals.json", "signals_manifest.parquet", "signals_stats.json"):
        (cohort / name).unlink()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    rc = cli.main(["signals", "--cohort-dir", str(cohort), "--ecg", str(ecg)])
    lines = _error_lines(capsys.readouterr().err, "signals")
    assert rc == 1 and len(lines) == 1 and "signals.npy needs" in lines[0] and "free" in lines[0], lines
    assert not [p for p in cohort.iterdir() if p.name.startswith(("signals", ".signals"))]


def test_a_resumed_conversion_says_the_last_one_stopped_unfinished(converted, caplog):
    from labecg.signals import SignalsConfig, convert_signals

    cohort, ecg = converted
    straight = (cohort / "signals.npy").read_bytes()
    for name in ("signals.npy", "signals.json", "signals_manifest.parquet", "signals_stats.json"):
        (cohort / name).unlink()
    convert_signals(SignalsConfig(cohort_dir=cohort, ecg=ecg, chunk_size=64), stop_after_chunks=1)
    with caplog.at_level("INFO", logger="labecg"):
        convert_signals(SignalsConfig(cohort_dir=cohort, ecg=ecg, chunk_size=64))
    assert "the last conversion stopped unfinished (1 of 4 chunks done); resuming" in caplog.text
    assert (cohort / "signals.npy").read_bytes() == straight
