"""The store never loses a measured run: it waits for other writers, and a run it cannot
take stays in its folder, importable later (issue 26, item 11)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.errors import StoreError
from toolkit.results import database
from toolkit.results.export import load_run_folder
from toolkit.results.store import ResultsStore, StoredRun
from toolkit.run.execute import make_staging_dir, publish_run
from toolkit.run.staging import sweep_staging

from .records import make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another writer holding ``path``'s write lock for ``seconds`` (started before returning)."""
    held = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    return thread


def test_a_sqlite_store_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_writer_waits_for_a_lock_held_longer_than_sqlites_default(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        holder = hold_write_lock(path, 6.0)  # Python's sqlite3 gives up after 5 s
        store.add_run(make_run("r1", [record("fp32")]))
        holder.join()
        assert store.run_ids() == ["r1"]


def test_a_write_refused_as_locked_at_once_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store._db.db.execute("PRAGMA busy_timeout = 0")  # type: ignore[attr-defined]
        holder = hold_write_lock(path, 0.3)
        store.add_run(make_run("r1", [record("fp32")]))
        store.tag("main", "r1")
        holder.join()
        assert store.resolve("main") == "r1"


def test_a_store_locked_past_every_retry_says_so(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite"
    sqlite3.connect(path).close()
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(database, "LOCK_RETRIES", 1)
    holder = hold_write_lock(path, 2.0)
    try:
        with pytest.raises(StoreError) as caught:
            ResultsStore(path)
    finally:
        holder.join()
    assert str(caught.value) == (f"results store {path} stayed locked by other writers "
                                 "through 2 waits of 0.05 s")


def damage(path: Path) -> None:
    """Overwrite the header of every page but the first: the file still opens, its tables
    do not read (``database disk image is malformed``)."""
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096):
        data[page * 4096: page * 4096 + 12] = b"\xee" * 12
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged_store(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.sqlite"
    with ResultsStore(path) as store:
        for index in range(4):
            store.add_run(make_run(f"old-{index}", [record("fp32", seed=index)]))
    damage(path)
    return path


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: room for an empty store, not for a run of 40,000 raw samples."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def staged(out: Path, run_id: str) -> Path:
    staging = make_staging_dir(out, run_id)
    (staging / "artifacts" / "fp32.tflite").write_bytes(b"model")
    return staging


def big_run(run_id: str, out: Path) -> StoredRun:
    run = make_run(run_id, [record("fp32", n=20_000), record("int8", n=20_000, seed=1)],
                   tags=("nightly",))
    return dataclasses.replace(run, report_dir=str(out / "runs" / run_id))


def test_reading_a_damaged_store_is_one_line(damaged_store: Path) -> None:
    result = invoke("runs", "list", "--store", str(damaged_store))
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert result.stderr == (f"edge: error: results store {damaged_store} is damaged "
                             "(database disk image is malformed): cannot be read\n")


def test_a_run_a_damaged_store_refuses_is_kept_and_importable(damaged_store: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = big_run("r1", out)
    final = out / "runs" / "r1"
    with ResultsStore(damaged_store) as store, pytest.raises(StoreError) as caught:
        publish_run(store, run, staged(out, "r1"), final)
    assert str(caught.value) == (
        f"results store {damaged_store} is damaged (database disk image is malformed): run r1 "
        f"not stored; its results are kept in {final}: store them later with "
        f"`edge runs import {final}`")
    assert (final / "artifacts" / "fp32.tflite").read_bytes() == b"model"
    assert not list(out.glob(".staging-*"))
    assert sorted(p.name for p in final.iterdir()) == ["artifacts", "results.json", "run.json"]

    fresh = tmp_path / "fresh.sqlite"
    result = invoke("runs", "import", str(final), "--store", str(fresh))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"imported run r1 (2 results) into {fresh}\n"
    again = invoke("runs", "import", str(final), "--store", str(fresh))
    assert again.stdout == f"already stored: run r1 (2 results) in {fresh}\n"
    with ResultsStore(fresh) as store:
        assert store.get_run("nightly") == dataclasses.replace(run, report_dir=str(final))


def test_a_full_disk_under_the_store_keeps_the_run(tiny_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = tiny_disk / "results.sqlite"
    run = big_run("r1", out)
    final = out / "runs" / "r1"
    with ResultsStore(path) as store, pytest.raises(StoreError) as caught:
        publish_run(store, run, staged(out, "r1"), final)
    assert str(caught.value) == (
        f"results store {path}: run r1 not stored: database or disk is full; its results are "
        f"kept in {final}: store them later with `edge runs import {final}`")
    assert load_run_folder(final) == dataclasses.replace(run, report_dir=str(final))


def test_a_full_disk_under_the_run_folder_still_stores_the_run(
        tiny_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tiny_disk / "out"
    staging = staged(out, "r1")
    with open(tiny_disk / "filler", "wb") as filler, pytest.raises(OSError):
        filler.write(b"x" * 300_000)  # what else fills the disk
        filler.flush()
    run = big_run("r1", out)
    with ResultsStore(tmp_path / "s.sqlite") as store:
        assert publish_run(store, run, staging, out / "runs" / "r1") == {}
        assert store.get_run("r1").results == run.results
    assert caplog.messages == [
        f"run r1 is stored, but its folder {out / 'runs' / 'r1'} could not be written (No "
        "space left on device); `edge report r1` renders its report"]
    assert not staging.exists()


def test_a_full_disk_under_both_keeps_the_run_in_the_temporary_folder(
        tiny_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    out = tiny_disk / "out"
    staging = staged(out, "r1")
    path = tiny_disk / "results.sqlite"
    with ResultsStore(path) as store:
        with open(tiny_disk / "filler", "wb") as filler, pytest.raises(OSError):
            filler.write(b"x" * 300_000)
            filler.flush()
        with pytest.raises(StoreError) as caught:
            publish_run(store, big_run("r1", out), staging, out / "runs" / "r1")
    kept = spare / "edge-run-r1"
    assert str(caught.value).endswith(
        f"run r1 not stored: database or disk is full; its results are kept in {kept}: store "
        f"them later with `edge runs import {kept}`")
    assert load_run_folder(kept).run_id == "r1"


FAST = ["--min-runs", "20", "--min-seconds", "0.1"]


def test_a_deploy_into_a_damaged_store_keeps_its_measurement(
        damaged_store: Path, tflite_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("deploy", str(tflite_copy), "-o", str(out), "--store", str(damaged_store),
                    *FAST)
    assert result.exit_code == 3 and "Traceback" not in result.output
    (folder,) = (out / "runs").iterdir()
    assert result.stderr == (
        f"edge: error: results store {damaged_store} is damaged (database disk image is "
        f"malformed): run {folder.name} not stored; its results are kept in {folder}: store "
        f"them later with `edge runs import {folder}`\n")
    fresh = tmp_path / "fresh.sqlite"
    assert invoke("runs", "import", str(folder), "--store", str(fresh)).exit_code == 0
    with ResultsStore(fresh) as store:
        assert {r.status.value for r in store.get_run("latest").results} == {"ok"}


HOLDER = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from toolkit.run.execute import make_staging_dir
make_staging_dir(Path(sys.argv[2]), sys.argv[3])
print("held", flush=True)
if sys.argv[4] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def staging_of(out: Path, run_id: str, how: str) -> subprocess.Popen:
    """A deploy's process that made ``.staging-RUN`` and was SIGKILLed (``kill``) or runs."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(Path.cwd()), str(out),
                                run_id, how], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    process.stdout.close()
    if how == "kill":
        process.wait()
    return process


def aged(folder: Path, hours: float) -> Path:
    then = time.time() - hours * 3600
    os.utime(folder, (then, then))
    return folder


def test_a_new_deploy_sweeps_staging_folders_of_killed_deploys(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staging_of(out, "killed", "kill")
    killed = aged(out / ".staging-killed", 2)
    staging_of(out, "just-killed", "kill")
    fresh_kill = out / ".staging-just-killed"
    running = staging_of(out, "running", "run")
    try:
        aged(out / ".staging-running", 5)
        old_edge = aged(make_dir(out / ".staging-old-edge"), 4 * 24)
        recent_old_edge = aged(make_dir(out / ".staging-recent-old-edge"), 2 * 24)
        mine = make_staging_dir(out, "new")
        assert not killed.exists() and not old_edge.exists()
        assert fresh_kill.exists()  # killed a minute ago: swept an hour later
        assert (out / ".staging-running").exists() and recent_old_edge.exists()
        assert mine.is_dir()
        assert sweep_staging(out, now=time.time() + 7200) == [fresh_kill]
    finally:
        running.kill()
        running.wait()
    assert sweep_staging(out, now=time.time() + 7200) == [out / ".staging-running"]
    assert mine.is_dir()  # this process's own, however old


def make_dir(folder: Path) -> Path:
    (folder / "artifacts").mkdir(parents=True)
    return folder
