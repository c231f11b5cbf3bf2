"""The same model deployed twice: identical files, nothing converted or uploaded again;
and the board cache's cap over many deploys of changing models.

    python benchmarks/reproducible.py [--deploys 20] [--cap-mb 1]

1. The README example (``edge deploy examples/digits_cnn.py --target local``, through the
   library) twice with a fresh conversion cache: sha256 per variant, conversions done and
   wall time of each deploy, and the size of the variants (the local board goes through
   the same cached upload code as an SSH board; bytes sent are counted on the SSH board).
2. The same model deployed twice to an SSH board (a private sshd on loopback, the same
   conversion cache): bytes of models sent over SFTP by each deploy.
3. ``--deploys`` deploys of a changing ``.tflite`` (the fp32 file with one weight nudged
   each time) to that board with ``cache_max_mb = --cap-mb``: the board cache's size after
   each one, against the cap.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Sshd
from toolkit.boards.ssh import Connection
from toolkit.run import deploy as pipeline

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "examples" / "digits_cnn.py"
#: Short measurements on the SSH board: what is measured there is the traffic, not latency.
FAST = {"min_runs": 20, "min_seconds": 0.1}


class Counter(logging.Handler):
    """Counts the conversions ``build_artifacts`` logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.converted: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith(": converting"):
            self.converted.append(str(record.args[0]) if record.args else "?")


class SentBytes:
    """Bytes written over SFTP (all, and of ``.tflite`` files), by wrapping ``Connection.put``."""

    def __init__(self) -> None:
        self.models = self.total = 0
        original = Connection.put

        def put(connection: Connection, source: IO[bytes], remote_path: str) -> int:
            sent = original(connection, source, remote_path)
            self.total += sent
            if ".tflite.part-" in remote_path:
                self.models += sent
            return sent

        Connection.put = put  # type: ignore[method-assign]


def deploy_once(model: Path, target: str, out: Path, cache: Path, counter: Counter,
                targets_dir: Path | None = None,
                settings: dict[str, Any] | None = None) -> dict[str, Any]:
    counter.converted.clear()
    started = time.perf_counter()
    outcome = pipeline.deploy(model, targets=[target], recipes="fp32,int8", out_dir=out,
                              targets_dir=targets_dir, settings=settings,
                              conversion_cache=cache)
    return {"seconds": time.perf_counter() - started, "converted": list(counter.converted),
            "sha256": {r.variant: r.sha256 for r in outcome.run.results},
            "size": {r.variant: r.size_bytes for r in outcome.run.results}}


def nudged(tflite: bytes, step: int) -> bytes:
    """``tflite`` with the first float of its largest buffer changed: a new, valid model."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(tflite)
    model = schema.Model.GetRootAs(data, 0)
    largest = max(range(model.BuffersLength()), key=lambda i: model.Buffers(i).DataLength())
    weights = model.Buffers(largest).DataAsNumpy().view(np.float32)  # a view into data
    weights[0] += np.float32(1e-4 * (step + 1))
    return bytes(data)


def board_cache_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--cap-mb", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    counter = Counter()
    build_log = logging.getLogger("toolkit.compress._build")
    build_log.setLevel(logging.INFO)
    build_log.addHandler(counter)
    build_log.propagate = False  # counted, not printed
    sent = SentBytes()
    with tempfile.TemporaryDirectory(prefix="edge-reproducible-") as folder:
        root = Path(folder)
        os.environ["EDGE_SSH_CONFIG"] = str(root / "no-ssh-config")  # the user's stays out
        cache = root / "conversions"

        print("1. edge deploy examples/digits_cnn.py --target local, twice, fresh "
              "conversion cache")
        local = [deploy_once(MODEL, "local", root / "out-local", cache, counter)
                 for _ in range(2)]
        print(f"   {'variant':<8} {'sha256, deploy 1':<66} {'identical in deploy 2'}")
        for variant, digest in local[0]["sha256"].items():
            print(f"   {variant:<8} {digest:<66} {local[1]['sha256'].get(variant) == digest}")
        for index, run in enumerate(local, 1):
            print(f"   deploy {index}: {run['seconds']:6.1f} s wall, "
                  f"{len(run['converted'])} conversions ({', '.join(run['converted']) or '-'}), "
                  f"{sum(run['size'].values())} bytes of models in the deploy")

        sshd = Sshd.create(root / "sshd")
        try:
            sshd.write_target(root / "targets", "lab", root / "board",
                              cache_max_mb=args.cap_mb, command_timeout=120.0)
            print("\n2. the same model deployed twice to an SSH board (loopback sshd)")
            for index in (1, 2):
                before, before_total = sent.models, sent.total
                run = deploy_once(MODEL, "lab", root / "out-ssh", cache, counter,
                                  root / "targets", FAST)
                same = run["sha256"] == local[0]["sha256"]
                print(f"   deploy {index}: {run['seconds']:6.1f} s wall, "
                      f"{len(run['converted'])} conversions, "
                      f"{sent.models - before} bytes of models uploaded "
                      f"({sent.total - before_total} bytes in all: job file, references, "
                      "agent), sha256 "
                      f"{'identical to the local deploys' if same else 'DIFFERENT'}")

            print(f"\n3. {args.deploys} deploys of a changing model, cache_max_mb = {args.cap_mb}")
            fp32 = next((root / "out-local" / "runs").glob("*/artifacts/fp32.tflite"))
            board_cache = root / "board" / "cache"
            cap = args.cap_mb * 1024 * 1024
            largest = 0
            for step in range(args.deploys):
                changed = root / "changing" / f"model-{step}.tflite"
                changed.parent.mkdir(exist_ok=True)
                changed.write_bytes(nudged(fp32.read_bytes(), step))
                pipeline.deploy(changed, targets=["lab"], out_dir=root / "out-changing",
                                targets_dir=root / "targets", settings=FAST,
                                conversion_cache=cache)
                size = board_cache_bytes(board_cache)
                largest = max(largest, size)
                print(f"   deploy {step + 1:2d}: board cache {size:8d} bytes, "
                      f"{len(list(board_cache.iterdir()))} files")
            print(f"   largest after any deploy: {largest} bytes, cap {cap} bytes: "
                  f"{'respected' if largest <= cap else 'EXCEEDED'}")
        finally:
            sshd.kill()


if __name__ == "__main__":
    main()
