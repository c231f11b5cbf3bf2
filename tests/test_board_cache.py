"""The board's artifact cache stays under the target's cap, evicting least recently used files.

The same shell command runs through the local shell and over a real OpenSSH server on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.ssh import Connection
from toolkit.boards.transfer import prune_cache, prune_cache_command, upload_all
from toolkit.cli.main import main

from .lab import Sshd
from .test_ssh import FAST, lab_target

KB = 1024


def aged(folder: Path, name: str, size: int, days_ago: float) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    stamp = time.time() - days_ago * 86400
    os.utime(path, (stamp, stamp))
    return path


def run_locally(folder: Path, keep: list[str], cap: int) -> list[str]:
    done = subprocess.run(["sh", "-c", prune_cache_command(str(folder), keep, cap)],
                          capture_output=True, check=True, text=True)
    return done.stdout.splitlines()


def test_least_recently_used_go_first_and_the_jobs_files_stay(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for days, name in enumerate(["newest.tflite", "middle.tflite", "oldest.tflite"]):
        aged(cache, name, 10 * KB, days_ago=days + 1)
    # The job's file is the oldest on disk: a board mounted noatime never saw it read.
    aged(cache, "job.tflite", 10 * KB, days_ago=30)
    aged(cache, "x.tflite.part-1", 50 * KB, days_ago=30)  # an upload in flight: not counted
    lines = run_locally(cache, ["job.tflite"], 25 * KB)
    assert lines == ["evicted oldest.tflite", "evicted middle.tflite", f"total {20 * KB}"]
    assert sorted(p.name for p in cache.iterdir()) == ["job.tflite", "newest.tflite",
                                                       "x.tflite.part-1"]
    # Using it touched it: the next job, which does not need it, evicts "newest" first.
    assert run_locally(cache, [], 15 * KB) == ["evicted newest.tflite", f"total {10 * KB}"]


def test_the_jobs_files_stay_even_over_the_cap(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    aged(cache, "big.tflite", 40 * KB, days_ago=9)
    aged(cache, "other.tflite", 1 * KB, days_ago=1)
    assert run_locally(cache, ["big.tflite"], 10 * KB) == ["evicted other.tflite",
                                                           f"total {40 * KB}"]


def test_a_missing_cache_folder_is_empty(tmp_path: Path) -> None:
    assert run_locally(tmp_path / "never-made", ["a.tflite"], 1) == ["total 0"]


@pytest.mark.slow
def test_twenty_jobs_over_ssh_keep_the_cap(sshd: Sshd, tmp_path: Path) -> None:
    cap = 256 * KB
    folder = str(tmp_path / "board" / "cache")
    with Connection(lab_target(sshd, tmp_path)) as board:
        for job in range(20):
            files = [os.urandom(40 * KB + job) for _ in range(2)]
            names = [hashlib.sha256(data).hexdigest() + ".tflite" for data in files]
            job_file = f"job-{job}.json"
            placements: list[tuple[str, str, Path | bytes]] = [
                (folder, name, data) for name, data in zip(names, files, strict=True)]
            placements.append((folder, job_file, json.dumps({"job": job}).encode()))
            upload_all(board, placements)
            pruned = prune_cache(board, folder, [*names, job_file], cap)
            on_board = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
            assert sum(on_board.values()) == pruned.total_bytes <= cap
            assert set(names) | {job_file} <= set(on_board)
            assert not set(pruned.evicted) & (set(names) | {job_file})
    assert len(on_board) < 3 * 20 / 2  # 20 jobs of 80 KB sent, most of them evicted


@pytest.mark.slow
def test_a_deploy_over_ssh_prunes_the_board_cache(sshd: Sshd, tmp_path: Path,
                                                  tflite_copy: Path) -> None:
    lab_target(sshd, tmp_path, cache_max_mb=1)
    cache = tmp_path / "board" / "cache"
    cache.mkdir(parents=True)
    for index in range(4):
        aged(cache, f"{index:064x}.tflite", 400 * KB, days_ago=index + 1)
    result = CliRunner().invoke(main, ["deploy", str(tflite_copy), "--target", "lab",
                                       "--targets-dir", str(tmp_path / "targets"),
                                       "-o", str(tmp_path / "out"), "--json", *FAST],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)["results"]
    left = {p.name: p.stat().st_size for p in cache.iterdir()}
    assert f"{record['sha256']}.tflite" in left
    assert sum(left.values()) <= 1024 * KB
    # The two least recently used old files went; the newest old one stayed.
    assert f"{0:064x}.tflite" in left and f"{3:064x}.tflite" not in left
