"""Does this machine have the disk and the memory a run will need?  Asked before it starts.

A 2 GB model that did not fit used to fail after minutes of conversion (a full disk, or the
kernel's OOM killer taking the whole process with no message).  :func:`check_resources`
estimates both from the models already loaded and the plan, and refuses at once, in one
line naming what is short and by how much (:class:`~toolkit.errors.HostResourceError`,
exit 3 as for any disk full), with nothing written.

Disk, per file system (a folder's nearest existing parent decides which):

- the output folder: every variant of every model, each counted at the model's fp32
  size (none is larger), one fp32 file more when a recipe rewrites an fp32 file
  (fp16, int8-dynamic, int4-weight write it first, beside the variant), and
  :data:`RUN_FOLDER_BYTES` per run (references, reports, the store);
- the conversion cache and this machine's board folder (``--target local``) hold the
  same files again only on another file system: on the output folder's they are hard
  links (:mod:`toolkit.links`) and cost nothing.

Memory, beyond the models already loaded: what the most demanding variant adds while it is
built, as a multiple of the model's weights (:func:`memory_factor`, measured on an MLP of
4096 x 4096 layers: :file:`benchmarks/large_model.py`), compared with what the system
says is available (``MemAvailable``, and the cgroup's limit when a container has one).
The libraries edge imports (a few hundred MB) are not counted: a small model is never
refused.  Both are estimates: a run can still fail for want of room another process took.

Example::

    check_resources([(source, chains)], out_dir=Path("edge-out"))  # or HostResourceError
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.compress._convert import LARGE_MODEL_BYTES, weight_bytes
from toolkit.compress._recipes import (
    Chain,
    Fp16Config,
    Fp32Config,
    Int4WeightConfig,
    Int8DynamicConfig,
)
from toolkit.errors import HostResourceError
from toolkit.model.load import ModelSource
from toolkit.units import format_size

#: What a run folder holds beside its variants: reference outputs (at most 2 MiB per
#: variant), the manifest, reports, results, the store's new rows.
RUN_FOLDER_BYTES = 64 * 1024 * 1024
#: Conversions that write an fp32 file first and rewrite its weights into the variant.
_REWRITES_FP32 = (Fp16Config, Int8DynamicConfig, Int4WeightConfig)


@dataclass(frozen=True)
class Shortage:
    """One resource that falls short: what, where, how much is needed and available."""

    what: str  # "disk" or "memory"
    where: str
    needed: int
    available: int

    def __str__(self) -> str:
        return (f"not enough {self.what} {self.where}: this run needs about "
                f"{_size(self.needed)}, {_size(self.available)} is available "
                f"({_size(self.needed - self.available)} short)")


def model_bytes(source: ModelSource) -> int:
    """The bytes of a model's weights (of the file, for a ``.tflite`` or ``.onnx`` given)."""
    if source.as_given or source.module is None:
        return source.path.stat().st_size
    return weight_bytes(source.module)


def memory_factor(source: ModelSource, chain: Chain) -> float:
    """What building ``chain`` adds to the memory in use, in multiples of the weights.

    fp32 and the recipes that rewrite its file, at 1 GiB and over: litert-torch's low-memory
    conversion (about 0.2x), then the host maps the file to check it (1x).  Under 1 GiB the
    default conversion holds about 4x.  A PT2E conversion (int8, qat, int8-mixed) copies
    the model first (1x) and converts with the default (4x); fine-tuning holds the copy,
    its gradients and the optimiser's two moments (4x), activations not counted.  A
    ``.tflite`` (not in memory yet) is mapped to be checked (1x), and read whole by
    ai-edge-quantizer to rewrite its weights (2x).
    """
    if source.as_given:
        return 2.0 if isinstance(chain.conversion, _REWRITES_FP32) else 1.0
    if chain.transforms or not isinstance(chain.conversion, (Fp32Config, *_REWRITES_FP32)):
        return 5.0
    return 1.0 if model_bytes(source) >= LARGE_MODEL_BYTES else 4.0


def check_resources(plan: Sequence[tuple[ModelSource, Sequence[Chain]]], *, out_dir: Path,
                    cache_dir: Path | None = None, board_dirs: Iterable[Path] = ()) -> None:
    """Raise :class:`HostResourceError` when the disk or the memory that building ``plan``
    (each model with its chains) needs (see the module's docstring) is not there."""
    shortages = [*disk_shortages(plan, out_dir=out_dir, cache_dir=cache_dir,
                                 board_dirs=board_dirs),
                 *memory_shortages(plan)]
    if shortages:
        raise HostResourceError("; ".join(str(s) for s in shortages) + "; nothing was written")


def disk_shortages(plan: Sequence[tuple[ModelSource, Sequence[Chain]]], *, out_dir: Path,
                   cache_dir: Path | None = None,
                   board_dirs: Iterable[Path] = ()) -> list[Shortage]:
    """The file systems without room for the run's files, each with what it lacks."""
    # A .tflite's fp32 variant is the file as given; a model file's fp32 is converted.
    variants = sum(model_bytes(source) * (len(chains) + (source.as_given and not any(
        isinstance(c.conversion, Fp32Config) for c in chains))) for source, chains in plan)
    scratch = max((model_bytes(source) for source, chains in plan if not source.as_given
                   and any(isinstance(c.conversion, _REWRITES_FP32) for c in chains)),
                  default=0)
    out_device, out_existing = _device(out_dir)
    # device -> (the folder named in the message, an existing folder there, bytes needed)
    needs = {out_device: (out_dir, out_existing,
                          variants + scratch + RUN_FOLDER_BYTES * len(plan))}
    for folder in (*([cache_dir] if cache_dir else []), *board_dirs):
        device, existing = _device(folder)
        if device != out_device:  # else hard links: no second copy
            where, _, needed = needs.get(device, (folder, existing, 0))
            needs[device] = (where, existing, needed + variants)
    shortages = []
    for where, existing, needed in needs.values():
        free = shutil.disk_usage(existing).free
        if needed > free:
            shortages.append(Shortage("disk", f"for {where}", needed, free))
    return shortages


def memory_shortages(plan: Sequence[tuple[ModelSource, Sequence[Chain]]]) -> list[Shortage]:
    """The memory the most demanding variant adds, when the system has less available."""
    available = available_memory()
    if available is None:
        return []
    needed = max((memory_factor(source, chain) * model_bytes(source)
                  for source, chains in plan for chain in chains), default=0.0)
    if needed <= available:
        return []
    return [Shortage("memory", "on this machine", int(needed), available)]


def available_memory() -> int | None:
    """Bytes the system can give this process now: ``MemAvailable``, lowered to what the
    process's cgroup (a container, a CI job) still allows; None where neither is known."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    found.extend(_cgroup_room())
    return min(found) if found else None


def _cgroup_room() -> list[int]:
    """``memory.max - memory.current`` of this process's cgroup (v2) and its parents."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as lines:
            path = next((line.strip()[3:] for line in lines if line.startswith("0::")), None)
    except OSError:
        return []
    if path is None:
        return []
    room = []
    group = Path("/sys/fs/cgroup") / path.lstrip("/")
    for folder in (group, *group.parents):
        if not folder.is_relative_to("/sys/fs/cgroup"):
            break
        with contextlib.suppress(OSError, ValueError):
            limit = (folder / "memory.max").read_text(encoding="ascii").strip()
            if limit != "max":
                current = int((folder / "memory.current").read_text(encoding="ascii"))
                room.append(max(0, int(limit) - current))
    return room


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else format_size(count)


def _device(folder: Path) -> tuple[int, Path]:
    """The device of ``folder``'s nearest existing parent (the folder may not exist yet)."""
    path = folder.expanduser().absolute()
    while True:
        try:
            return os.stat(path).st_dev, path
        except OSError:
            if path.parent == path:
                raise
            path = path.parent


__all__ = ["RUN_FOLDER_BYTES", "Shortage", "available_memory", "check_resources",
           "disk_shortages", "memory_factor", "memory_shortages", "model_bytes"]
