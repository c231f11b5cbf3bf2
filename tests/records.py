"""Result records shaped like the ones `edge deploy` stores, for store, check and report tests."""

from __future__ import annotations

import numpy as np

from toolkit.results.record import ResultRecord
from toolkit.results.store import EarlierLatency, StoredRun

BOARD = {"hostname": "lab-1", "system": "Linux", "release": "6.1", "machine": "x86_64",
         "python": "3.11.2", "cpu_count": 2, "cpu_model": "Test CPU", "board_model": ""}


def record(variant: str, *, target: str = "local", median_ms: float = 1.0, n: int = 400,
           seed: int = 0, size: int = 100_000, accuracy: float | None = 0.97,
           peak_rss: int = 60_000_000, energy_mj: float | None = None,
           board: dict | None = None) -> dict:
    """A measured variant whose samples are a lognormal around ``median_ms``."""
    rng = np.random.default_rng(seed)
    samples = np.round(median_ms * rng.lognormal(0.0, 0.08, n), 3)
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    result = {
        "target": target, "variant": variant, "file": f"{variant}.tflite", "sha256": "a" * 64,
        "size_bytes": size, "config": {"recipe": variant}, "accuracy": accuracy,
        "eval_samples": 360, "compress_seconds": 1.0, "details": {},
        "board": board or BOARD, "status": "ok",
        "runtime": {"name": "ai-edge-litert", "version": "2.3.0"}, "threads": 1,
        "load_ms": 2.0, "first_inference_ms": 1.5, "runs": n,
        "measured_seconds": float(samples.sum() / 1e3),
        "latency_ms": {"p50": float(p50), "p90": float(p90), "p99": float(p99),
                       "mean": float(samples.mean()), "std": float(samples.std()),
                       "min": float(samples.min()), "max": float(samples.max())},
        "latency_samples_ms": samples.tolist(),
        "peak_rss_bytes": peak_rss, "load_rss_growth_bytes": 1_000_000,
    }
    if energy_mj is not None:  # the agent's optional power figures, as issue 5 ships them
        result["power"] = {"idle_power_w": 1.0, "active_power_w": 2.0,
                           "energy_per_inference_j": energy_mj / 1000, "sample_rate_hz": 100.0}
    return result


def changed(result: ResultRecord, **keys: object) -> ResultRecord:
    """``result`` with stored ``keys`` set (``status="failed"``, ``verdict={...}``)."""
    return ResultRecord.from_dict({**result.to_dict(), **keys})


def make_run(run_id: str, results: list[dict | ResultRecord], *, model: str = "digits_cnn",
             created_at: str = "2026-11-22T20:00:00+00:00", commit: str | None = "c0ffee",
             tags: tuple[str, ...] = ()) -> StoredRun:
    """A stored run of ``results``: stored-shape dicts (read as the store reads them) or records."""
    return StoredRun(run_id=run_id, created_at=created_at, model_name=model,
                     model_path=f"/src/{model}.py", model_sha256="f" * 64,
                     report_dir=f"edge-out/runs/{run_id}", git_commit=commit, tags=tags,
                     results=[r if isinstance(r, ResultRecord) else ResultRecord.from_dict(r)
                              for r in results])


def earlier_runs(run: StoredRun, *, factors: tuple[float, ...] = (1.0, 1.004, 0.996, 1.002)
                 ) -> list[EarlierLatency]:
    """Earlier runs of ``run``'s files on the same board, as the store lends them to edge
    check: one per factor, each record's median and p99 scaled by it (a steady board)."""
    return [EarlierLatency(run_id=f"{run.run_id}-earlier-{index}", created_at=run.created_at,
                           target=r.target, variant=r.variant, sha256=r.sha256 or "",
                           board=r.board_identity,
                           p50_ms=factor * float(np.median(r.latency_samples_ms)),
                           p99_ms=factor * float(np.quantile(r.latency_samples_ms, 0.99)))
            for index, factor in enumerate(factors) for r in run.results]
