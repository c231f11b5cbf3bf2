"""Ctrl-C at random moments of ``edge deploy``, typed into a real pseudo-terminal.

Each trial deploys the README model (examples/digits_cnn.py, fp32 and int8, local
target, a fresh conversion cache so that every trial converts) and types ``^C`` at a
moment drawn uniformly between the first progress line and the end of a deploy timed
once beforehand: loading, checking, converting (the window in which converters swallowed
the interrupt), references, measuring, storing.  Per trial: the stage shown when ``^C``
was typed, the exit status, whether a run was stored and whether anything was left in
the output folder (a run folder or a ``.staging-*``).

A trial is *clean* when it exits 130 with one ``edge: interrupted`` line, no run stored,
nothing left.  ``^C`` typed after the run was stored exits 130 too, with the run stored
whole (counted apart: the deploy was done); a deploy that ends before ``^C`` is typed is
counted as finished.

Usage: python benchmarks/interrupts.py [--trials 20] [--seed N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "examples" / "digits_cnn.py"
#: The pseudo-terminal on stdin becomes the controlling terminal of this new session, so
#: ^C typed there signals its foreground group; SIGINT gets its default disposition.
IN_A_TERMINAL = ("import fcntl, os, signal, sys, termios; "
                 "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                 "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "os.execv(sys.argv[1], sys.argv[1:])")
_STAGE = re.compile(r"\d+:\d\d (?:\x1b\[0m)?([^\x1b]+?)(?:\x1b|\s\s\()")


def deploy(folder: Path, at: float | None) -> dict[str, object]:
    """One deploy in a pty; ^C ``at`` seconds after its first output (None: never)."""
    import pty

    out = folder / "out"
    folder.mkdir(parents=True)
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGE_CONVERSION_CACHE": str(folder / "cc"),
           "EDGE_LOCAL_BOARD": str(folder / "board")}
    env.pop("EDGE_STORE", None)
    process = subprocess.Popen(
        [sys.executable, "-c", IN_A_TERMINAL, sys.executable, "-m", "toolkit", "deploy",
         str(MODEL), "--target", "local", "--recipe", "fp32,int8", "-o", str(out)],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env, cwd=folder)
    os.close(slave)
    shown = b""
    first = sent = None
    stage = ""
    started = time.monotonic()
    while True:
        ready, _, _ = select.select([master], [], [], 0.01)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            shown += data
        now = time.monotonic()
        first = first if first is not None or not shown else now
        if at is not None and first is not None and sent is None and now - first >= at:
            stages = _STAGE.findall(shown.decode("utf-8", "replace"))
            stage = stages[-1].strip() if stages else "(none shown)"
            os.write(master, b"\x03")
            sent = now - first
        if now - started > 600:
            process.kill()
            break
    process.wait()
    os.close(master)
    text = shown.decode("utf-8", "replace")
    stored = 0
    if (out / "results.sqlite").exists():
        with sqlite3.connect(out / "results.sqlite") as db:
            stored = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    left = [str(p.relative_to(out)) for p in [*out.glob(".staging-*"), *out.glob("runs/*")]]
    left += [str(p) for p in (folder / "cc").glob(".staging-*")]
    return {"at": None if sent is None else round(sent, 2), "stage": stage,
            "exit": process.returncode, "stored": stored, "left": left,
            "one_line": text.rstrip().endswith("edge: interrupted"),
            "traceback": "Traceback" in text, "seconds": round(time.monotonic() - started, 1)}


def verdict(trial: dict[str, object]) -> str:
    if trial["at"] is None:
        return "finished before ^C"
    if trial["exit"] == 130 and trial["one_line"] and not trial["traceback"]:
        if not trial["stored"] and not trial["left"]:
            return "clean"
        if trial["stored"] == 1 and len(trial["left"]) == 1:  # type: ignore[arg-type]
            return "stopped after storing (run whole)"
    return "NOT CLEAN"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import random

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="edge-interrupts-") as tmp:
        whole = deploy(Path(tmp) / "timing", None)
        span = float(whole["seconds"])  # type: ignore[arg-type]
        print(f"an uninterrupted deploy: exit {whole['exit']}, {span:.1f} s", flush=True)
        trials = []
        for index in range(args.trials):
            trial = deploy(Path(tmp) / f"t{index}", rng.uniform(0.0, span))
            trial["verdict"] = verdict(trial)
            trials.append(trial)
            print(f"{index + 1:3d}  ^C at {trial['at']!s:>6} s  {trial['stage'][:44]:44s} "
                  f"exit {trial['exit']}  stored {trial['stored']}  left {len(trial['left'])}"
                  f"  {trial['verdict']}", flush=True)
    counts = Counter(str(t["verdict"]) for t in trials)
    print("; ".join(f"{n} {v}" for v, n in counts.most_common()))
    if args.json:
        print(json.dumps(trials, indent=1))
    return 1 if counts.get("NOT CLEAN") else 0


if __name__ == "__main__":
    sys.exit(main())
