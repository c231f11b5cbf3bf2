"""Issue 26 item 13: what a large fp32 model costs on the host, on disk and in memory.

    python benchmarks/large_model.py [--mb 2048] [--recipe fp32[,fp16]] [--repo PATH]
                                     [--work DIR] [--keep]

Writes a model file whose weights are ``--mb`` MiB of fp32 (a stack of 4096 x 4096
``Linear`` layers, 64 MiB each, weights drawn from a fixed seed), then runs the CLI as a
user would, in a child process::

    edge deploy MODEL --target local --recipe RECIPE -o OUT --conversion-cache CACHE

with the local board's folder (``$EDGE_LOCAL_BOARD``) and its lease folder inside the
work folder, so nothing of the user's (or of other engineers on a shared machine) is
touched.  stderr is a pipe, as in a CI log.  Printed:

- disk used by edge's three folders (the run folder, the conversion cache, the local
  board), each alone and together, as ``du`` counts them (blocks; a file hard-linked
  into several folders is counted once in the total);
- the peak resident memory of the edge command's whole process tree (the sum of every
  descendant's ``VmRSS``, sampled from ``/proc`` every 0.1 s), of its largest process,
  and the processes at the peak with the part of each that maps files (``RssFile``: the
  model's pages, the libraries), which the kernel can take back without swapping;
- the wall time, the exit status, and the longest time stderr stayed silent.

``--repo PATH`` runs another checkout's edge (an older commit, for a before/after) with
this Python.  The work folder (default: a new folder in the system's temporary folder)
is removed at the end unless ``--keep``.  Measured at 2048 MiB on 2 shared cores: before
the change this script was written for, 667 s, 2 copies on disk and a 13.9 GB peak (6.5x);
after it, about 2-3 minutes, 1 copy and 5.1 GB (2.4x).  Check ``free`` and ``df`` first.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYER_MIB = 64  # one 4096 x 4096 fp32 Linear layer's weights
MODEL = '''\
"""A {layers}-layer MLP of 4096 x 4096 fp32 layers: {mib} MiB of weights."""

import torch

LAYERS = {layers}


def build_model():
    torch.manual_seed(0)
    layers = []
    for _ in range(LAYERS):
        layer = torch.nn.Linear(4096, 4096, bias=False)
        with torch.no_grad():
            layer.weight.uniform_(-1 / 64, 1 / 64)
        layers += [layer, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def example_input():
    return (torch.ones(1, 4096),)
'''


def tree_rss(root: int) -> list[tuple[int, int, str]]:
    """``(VmRSS, RssFile in bytes, command line)`` of ``root`` and of every descendant;
    RssFile is the part that maps files (the model's pages, the libraries): the kernel can
    take it back without swapping."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found = []
    pending = [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status
                          if line.startswith(("VmRSS:", "RssFile:"))}
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        found.append((fields.get("VmRSS", 0), fields.get("RssFile", 0), command.strip()))
    return found


class Sampler(threading.Thread):
    """The peak of the summed :func:`tree_rss` while ``process`` runs, and what made it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.peak_total = self.peak_largest = 0
        self.peak_at = 0.0
        self.peak_processes: list[tuple[int, int, str]] = []
        self.started = time.monotonic()

    def run(self) -> None:
        while self.process.poll() is None:
            processes = tree_rss(self.process.pid)
            total = sum(rss for rss, _, _ in processes)
            if total > self.peak_total:
                self.peak_total, self.peak_at = total, time.monotonic() - self.started
                self.peak_processes = processes
            self.peak_largest = max([self.peak_largest, *(rss for rss, _, _ in processes)])
            time.sleep(0.1)


def du(*paths: Path) -> int:
    """Bytes of disk blocks under ``paths`` as one ``du`` counts them (hard links once)."""
    present = [str(p) for p in paths if p.exists()]
    if not present:
        return 0
    out = subprocess.run(["du", "-s", "-c", "-B1", *present], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=2048, help="MiB of fp32 weights")
    parser.add_argument("--recipe", default="fp32", help="e.g. fp32 or fp32,fp16")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the checkout whose edge runs (default: this one)")
    parser.add_argument("--work", type=Path, help="work folder (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    layers = max(1, round(args.mb / LAYER_MIB))
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-large-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"mlp{layers * LAYER_MIB}.py"
    model.write_text(MODEL.format(layers=layers, mib=layers * LAYER_MIB), encoding="utf-8")
    out, cache, board = work / "out", work / "cache", work / "board"
    env = {**os.environ, "EDGE_LOCAL_BOARD": str(board), "EDGE_LEASE_ROOT": str(work / "leases"),
           "PYTHONPATH": os.pathsep.join([str(args.repo.resolve()),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-c", "import sys; from toolkit.cli.main import main; "
               "sys.argv[0] = 'edge'; sys.exit(main())",
               "deploy", str(model), "--target", "local", "--recipe", args.recipe,
               "-o", str(out), "--conversion-cache", str(cache),
               "--min-runs", "5", "--min-seconds", "0"]
    commit = subprocess.run(["git", "-C", str(args.repo), "log", "-1", "--format=%h %s"],
                            check=False, capture_output=True, text=True).stdout.strip()
    print(f"edge at {args.repo}: {commit[:100]}")
    print(f"model: {layers} x Linear(4096, 4096), {layers * LAYER_MIB} MiB fp32; "
          f"recipe {args.recipe}; work folder {work}")
    try:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sampler = Sampler(process)
        sampler.start()
        stderr_lines: list[tuple[float, str]] = []

        def read_stderr() -> None:
            assert process.stderr is not None
            for raw in process.stderr:
                stderr_lines.append((time.monotonic() - started,
                                     raw.decode("utf-8", "replace").rstrip()))

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        assert process.stdout is not None
        stdout = process.stdout.read().decode("utf-8", "replace")
        status = process.wait()
        reader.join()
        sampler.join()
        wall = time.monotonic() - started

        model_bytes = layers * LAYER_MIB * 1024 ** 2
        runs = out / "runs"
        print(f"\nexit status {status}, {wall:.0f} s wall")
        moments = [0.0, *(at for at, _ in stderr_lines), wall]
        silence = max(b - a for a, b in itertools.pairwise(moments))
        print(f"stderr: {len(stderr_lines)} lines, longest silence {silence:.0f} s")
        for at, line in stderr_lines[-12:]:
            print(f"  {at:6.0f} s  {line[:150]}")
        if status != 0:
            print(stdout[-2000:])
        print("\ndisk (du, blocks; hard links counted once)")
        for name, path in (("run folder", runs), ("conversion cache", cache),
                           ("local board", board)):
            print(f"  {name:<18} {du(path) / 1e9:7.2f} GB")
        together = du(runs, cache, board)
        print(f"  {'all three':<18} {together / 1e9:7.2f} GB = {together / model_bytes:.2f}"
              f" x the model ({model_bytes / 1e9:.2f} GB)")
        print("\nmemory (VmRSS sampled every 0.1 s)")
        print(f"  process tree peak  {sampler.peak_total / 1e9:7.2f} GB = "
              f"{sampler.peak_total / model_bytes:.2f} x the model (at {sampler.peak_at:.0f} s)")
        print(f"  largest process    {sampler.peak_largest / 1e9:7.2f} GB")
        mapped = sum(file for _, file, _ in sampler.peak_processes)
        print(f"  at the peak, {mapped / 1e9:.2f} GB of it mapped files (RssFile):")
        for rss, file, command in sorted(sampler.peak_processes, reverse=True):
            if rss >= 10 * 1024 ** 2:
                print(f"    {rss / 1e9:6.2f} GB ({file / 1e9:.2f} GB mapped)  {command[:80]}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
