"""Issue 18's labgrid figures: board scheduling on a real labgrid coordinator.

A ``labgrid-coordinator``, a ``labgrid-exporter`` with one NetworkService per board, 4
boards (real OpenSSH servers on loopback, tests/lab.py) as places pi-01..pi-04 tagged
``board=rpi4``.  Three controller processes each run ``--jobs`` jobs for
``tag:board=rpi4``, ``--parallel`` at a time (more demand than boards, so jobs queue);
controller ``ci`` asks with priority 10, ``alice`` and ``bob`` with 0.  Each job goes
through :func:`toolkit.labgrid.hold.run_scheduled` (reserve, queue, acquire, NetworkService
address, release) and is a light job that still takes edge's board lease: SSH to the
board, take the lease (toolkit.boards.lease), ``sleep --hold`` on the board under it; its start
and end are read on the board inside the lease.

Prints:

1. every job (controller, priority, queue positions seen, place, wait), overlapping jobs
   on any board (must be 0), jobs done, and order inversions: a job given a board while
   one ranked before it (higher priority, else older reservation) was waiting (must be 0);
2. the same (jobs holding a board ``--restart-hold`` s) with the coordinator killed
   (SIGKILL) mid-run and restarted 1 s later (its exporter restarted as systemd would):
   overlapping jobs (must be 0), jobs done, and what edge did (reservations made again,
   places re-acquired, lease waits);
3. ``edge bench`` against a coordinator that is not there: its one line and exit status.

    python benchmarks/labgrid_lab.py [--jobs 4] [--parallel 3] [--hold 0.8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab import free_port  # noqa: E402
from tests.labgrid_lab import (  # noqa: E402
    Coordinator,
    acquired_places,
    order_inversions,
    overlaps,
    running_lab,
)

PLACES = {f"pi-0{i}": {"board": "rpi4"} for i in range(1, 5)}
CONTROLLERS = (("alice", 0), ("bob", 0), ("ci", 10))
WHAT_EDGE_DID = {
    "reconnecting": "lost the coordinator and reconnected (a waiting job then reserves again)",
    "lost": "lost the coordinator while its job ran (the job went on under the board lease)",
    "reacquired": "took its place again once the coordinator was back",
    "not-reacquired": "found its place given to a waiting job meanwhile (fenced by the lease)",
    "lease-busy": "was allotted a place whose board lease a forgotten job held: waited",
}


def run_controllers(coordinator: Coordinator, targets_dir: Path, out: Path,
                    args: argparse.Namespace, restart: bool) -> float:
    """Start the three controllers together; with ``restart``, kill the coordinator once
    jobs have finished and every board is taken again (mid-run), and start it 1 s later."""
    started = time.monotonic()
    processes = []
    for name, priority in CONTROLLERS:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tests.labgrid_lab", "controller", coordinator.address,
             str(targets_dir), "tag:board=rpi4", str(priority), str(args.jobs),
             str(args.parallel), str(args.restart_hold if restart else args.hold), name,
             str(out)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}))
        time.sleep(0.3)  # staggered, so that age decides between equal priorities
    if restart:
        while not (out.exists() and len(out.read_text().splitlines()) >= 2
                   and len(acquired_places(coordinator.address)) == len(PLACES)):
            time.sleep(0.05)
        print(f"  coordinator killed at {time.monotonic() - started:.1f} s (2 jobs done, "
              f"{len(PLACES)} boards taken), restarted 1 s later", flush=True)
        coordinator.restart(down_seconds=1.0)
    for process in processes:
        process.wait(600)
    return time.monotonic() - started


def report(records: list[dict], total: int, wall: float, *, detail: bool) -> None:
    done = [r for r in records if r.get("done")]
    if detail:
        print(f"  {'job':<9} {'prio':>4}  {'queue positions seen':<28} {'place':<6} "
              f"{'waited':>7} {'ran':>5}")
        for r in sorted(done, key=lambda r: r["start"]):
            seen = [s.split()[2] + "/" + s.split()[4] for s in r["statuses"]
                    if s.startswith("queue position")]
            print(f"  {r['job']:<9} {r['priority']:>4}  {' '.join(seen) or '-':<28} "
                  f"{r['place']:<6} {r['allocated'] - r['asked']:>6.2f}s "
                  f"{r['end'] - r['start']:>4.2f}s")
    for r in records:
        if not r.get("done"):
            print(f"  {r['job']}: FAILED {r.get('error')}")
    print(f"  overlapping jobs on any board: {overlaps(records)}")
    print(f"  jobs done: {len(done)}/{total} in {wall:.1f} s")
    print(f"  order inversions (priority, then age): {order_inversions(records)}")
    positions = sum(1 for r in records for s in r["statuses"] if s.startswith("queue position"))
    print(f"  queue positions reported: {positions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs per controller")
    parser.add_argument("--parallel", type=int, default=3, help="jobs at a time per controller")
    parser.add_argument("--hold", type=float, default=0.8, help="seconds each job holds a board")
    parser.add_argument("--restart-hold", type=float, default=3.0,
                        help="the same in part 2, long enough to run through the restart")
    args = parser.parse_args()
    total = args.jobs * len(CONTROLLERS)

    with tempfile.TemporaryDirectory(prefix="edge-labgrid-") as tmp:
        root = Path(tmp)
        with running_lab(root, PLACES) as lab:
            coordinator, exporter, boards = lab.coordinator, lab.exporter, lab.boards
            print(f"labgrid 26 coordinator {coordinator.address}, exporter with "
                  f"{len(boards)} NetworkServices (loopback sshd boards), places "
                  f"{', '.join(PLACES)} tagged board=rpi4")
            print(f"controllers: {', '.join(f'{n} (priority {p})' for n, p in CONTROLLERS)}; "
                  f"each {args.jobs} jobs, {args.parallel} at a time, for tag:board=rpi4; "
                  f"job = SSH + edge board lease + sleep {args.hold:g} s on the board\n")

            print("1. three controllers, one coordinator")
            out = root / "run1.jsonl"
            wall = run_controllers(coordinator, root / "targets", out, args, False)
            report([json.loads(line) for line in out.read_text().splitlines()], total, wall,
                   detail=True)

            print(f"\n2. coordinator killed and restarted mid-run (jobs hold a board "
                  f"{args.restart_hold:g} s)")
            coordinator.wait_saved(PLACES)  # places it saved are what a restart brings back
            restarts_before = exporter.restarts
            out = root / "run2.jsonl"
            wall = run_controllers(coordinator, root / "targets", out, args, True)
            records = [json.loads(line) for line in out.read_text().splitlines()]
            report(records, total, wall, detail=False)
            said: Counter[str] = Counter()
            for record in records:
                said.update(record["states"])
            print("  what edge did (status events over all jobs):")
            for state, meaning in WHAT_EDGE_DID.items():
                print(f"    {said[state]:>3} x {meaning}")
            print(f"  exporter restarted (as systemd would): "
                  f"{exporter.restarts - restarts_before} time(s)")

        print("\n3. edge bench against a coordinator that is not running")
        address = f"127.0.0.1:{free_port()}"
        started = time.monotonic()
        answer = subprocess.run(
            [sys.executable, "-m", "toolkit", "bench", str(REPO / "examples" / "digits_cnn.py"),
             "--targets", "tag:board=rpi4", "--coordinator", address, "--targets-dir",
             str(REPO / "targets"), "-o", str(root / "out")],
            cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=300, check=False)
        print(f"  exit {answer.returncode} after {time.monotonic() - started:.1f} s; stderr:")
        for line in answer.stderr.strip().splitlines():
            print(f"    {line}")


if __name__ == "__main__":
    main()
