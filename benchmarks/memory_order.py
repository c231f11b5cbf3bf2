"""Issue 13's peak-memory figure: does a variant's peak depend on its position in the job?

Prints one table; it is not a test (``tests/test_agent.py`` holds the test).  Run it from
the repository root (about a minute):

    python benchmarks/memory_order.py [--model examples/digits_cnn.py]
                                      [--recipes fp32,fp16,int8-dynamic,int8] [--seconds 2]

The library builds the variants once (``toolkit.compress.compress_to_folder``); the real
agent (the zipapp the host ships, run as the local target runs it) then measures them
twice, recipes in the given order and reversed, with the default measurement settings
except ``min_seconds`` (``--seconds``: long enough for a microsecond model to ship its
50,000 raw samples per variant, which is what made the agent grow).  Per variant: peak
resident memory (VmHWM of its measuring process) in each order and the difference.
Before the zygote (issue 13.2) the same file grew from first to last position (an MLP:
38.5 -> 47.7 MiB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device_agent import protocol  # noqa: E402
from toolkit.artifacts.agent_package import build_agent_package  # noqa: E402
from toolkit.compress import compress_to_folder  # noqa: E402


def measure(folder: Path, variants: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Run the agent on ``variants`` in this order; the peak and runs per variant name."""
    agent = build_agent_package()
    (folder / agent.name).write_bytes(agent.data)
    job = protocol.make_job(job_id="memory-order", variants=variants,
                            settings={"min_seconds": seconds, "cooldown_seconds": 0})
    (folder / "job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, str(folder / agent.name), "run",
                           str(folder / "job.json")], capture_output=True, check=True)
    result = protocol.parse_result(done.stdout, job)
    return {v["name"]: v for v in result["variants"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "examples" / "digits_cnn.py"))
    parser.add_argument("--recipes", default="fp32,fp16,int8-dynamic,int8")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-memory-order-") as scratch:
        manifest_path = compress_to_folder(args.model, args.recipes, Path(scratch) / "variants")
        folder = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        variants = [{"name": v["recipe"], "file": v["file"], "sha256": v["sha256"]}
                    for v in manifest["variants"]]
        forward = measure(folder, variants, args.seconds)
        backward = measure(folder, variants[::-1], args.seconds)
    mib = 2 ** 20
    print(f"model {Path(args.model).name}, {sys.executable}, min_seconds {args.seconds:g}")
    print("| variant | position A | peak A (MiB) | runs A | position B | peak B (MiB) | runs B "
          "| B - A |")
    print("|---|---|---|---|---|---|---|---|")
    names = [v["name"] for v in variants]
    worst = 0.0
    for index, name in enumerate(names):
        a, b = forward[name], backward[name]
        if a["status"] != "ok" or b["status"] != "ok":
            print(f"| {name} | failed: {a.get('error') or b.get('error')} |")
            continue
        change = (b["peak_rss_bytes"] - a["peak_rss_bytes"]) / a["peak_rss_bytes"]
        worst = max(worst, abs(change))
        print(f"| {name} | {index + 1} | {a['peak_rss_bytes'] / mib:.2f} | {a['runs']} "
              f"| {len(names) - index} | {b['peak_rss_bytes'] / mib:.2f} | {b['runs']} "
              f"| {change * 100:+.2f} % |")
    print(f"largest difference between orders: {worst * 100:.2f} % (limit 2 %)")


if __name__ == "__main__":
    main()
