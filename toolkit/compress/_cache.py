"""The host's conversion cache: a second build of an unchanged model converts nothing.

An entry is one ``.tflite`` file with its manifest entry (accuracy, fidelity, counts, the
host runtime's check), stored under a key that hashes what both depend on:

- the model file's sha256 and the files loading it read (its weights, a helper module
  beside it: :attr:`ModelSource.loaded_files`);
- the data the chain uses, by content: ``eval_data()`` and ``calibration_data()`` always,
  ``train_data()`` for chains that fine-tune (data that differs on every call, a random
  subset say, changes the key and is converted again, as it should be);
- the chain's config (:meth:`Chain.to_dict`);
- the toolchain: versions of torch, litert-torch, litert-converter, ai-edge-litert,
  ai-edge-quantizer, torchao, torch-pruning and numpy, edge's version and a hash of its
  compression code, the Python version and the machine.

Not seen: files the model reads outside its import, ``build_model()`` and
``example_input()`` (say inside ``forward``), and changes to a library it imports that is
not among the versions above; delete the cache folder (or give another) after such a change.

The folder is bounded: after each store, least recently used entries (an entry's folder
is touched on every use) are removed until the total is at most ``max_bytes``.

An entry's file and the run folder's are one file on disk (a hard link, see
:mod:`toolkit.links`) where both folders are on one file system: a variant is never
written in place once converted, and :meth:`ConversionCache.fetch` checks the sha256 of
what it hands out, so an entry changed through another name is converted again.

Example::

    cache = ConversionCache(Path("~/.cache/edge/conversions"))
    keys = CacheKeys(source)
    record = cache.fetch(keys.key(chain), Path("out/int8.tflite"))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent.protocol import sha256_file
from toolkit.compress._recipes import Chain
from toolkit.compress._toolchain import version
from toolkit.links import place
from toolkit.model.load import ModelSource

if TYPE_CHECKING:
    from toolkit.model.load import DataFunction

_log = logging.getLogger(__name__)

#: 2 GiB: a few hundred variants of small models, a few dozen of a MobileNet.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
#: Bump when an entry's layout or meaning changes: old entries then simply miss.
FORMAT = 1
MODEL_FILE = "model.tflite"
ENTRY_FILE = "entry.json"
#: Staging folders older than this belong to a build that was killed.
_STALE_STAGING_SECONDS = 3600
#: litert-converter lowers litert-torch's graph into the file: another release writes
#: other bytes; onnxscript, onnx and onnxruntime write an ONNX Runtime variant's.
_TOOLCHAIN = ("torch", "litert-torch", "litert-converter", "ai-edge-litert",
              "ai-edge-quantizer", "torchao", "torch-pruning", "numpy", "onnx", "onnxscript",
              "onnxruntime", "edge")
#: edge's code that decides a file's bytes or its manifest entry.
_CODE = ("compress", "model", "artifacts", "_quiet.py")


@functools.cache
def toolchain() -> dict[str, str]:
    """The versions (and edge's code hash) that a converted file depends on."""
    versions = {name: version(name) for name in _TOOLCHAIN}
    package = Path(__file__).resolve().parent.parent
    code = hashlib.sha256()
    for part in _CODE:
        path = package / part
        for source in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            code.update(source.name.encode() + b"\0" + source.read_bytes())
    versions["edge-code"] = code.hexdigest()
    versions["python"] = "{}.{}".format(*sys.version_info[:2])
    versions["machine"] = platform.machine()
    return versions


def _digest_value(value: object, hasher: hashlib._Hash) -> None:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"tensor {value.dtype} {tuple(value.shape)}\0".encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        hasher.update(f"array {value.dtype} {value.shape}\0".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    else:
        hasher.update(f"{type(value).__name__} {value!r}\0".encode())


def data_digest(data: DataFunction | None) -> str:
    """The sha256 of every ``(inputs, label)`` a data function yields (``"none"`` without one)."""
    if data is None:
        return "none"
    hasher = hashlib.sha256()
    for inputs, label in data():
        for value in inputs:
            _digest_value(value, hasher)
        _digest_value(label, hasher)
        hasher.update(b"\1")
    return hasher.hexdigest()


class CacheKeys:
    """The keys of one model's chains; each data function is read (and hashed) once."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._data: dict[str, str] = {}

    def _digest(self, name: str) -> str:
        if name not in self._data:
            self._data[name] = data_digest(getattr(self.source, name))
        return self._data[name]

    def key(self, chain: Chain) -> str:
        data = ("eval_data", "calibration_data",
                *(("train_data",) if chain.needs_training_data else ()))
        described = {
            "format": FORMAT,
            "model_sha256": self.source.sha256,
            "loaded_files": sorted(digest for _path, digest in self.source.loaded_files),
            "data": {name: self._digest(name) for name in data},
            "chain": chain.to_dict(),
            "toolchain": toolchain(),
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class ConversionCache:
    """Converted files and their manifest entries in ``root``, at most ``max_bytes`` in all.

    Never fails a build: an unreadable, unwritable or damaged cache is a miss, logged.
    ``hits`` and ``misses`` count this object's look-ups.
    """

    def __init__(self, root: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def fetch(self, key: str, destination: Path) -> dict[str, Any] | None:
        """Place the entry's file at ``destination`` (a hard link where the file system
        allows, see :func:`toolkit.links.place`) and return its record, or None."""
        entry = self.root / key
        try:
            record = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
            place(entry / MODEL_FILE, destination)
            if sha256_file(destination) != record["sha256"]:
                raise ValueError("the cached file does not match its recorded sha256")
            os.utime(entry)  # its last use, for the least-recently-used eviction
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("conversion cache entry %s is unusable (%s); converting again",
                         entry, exc)
            destination.unlink(missing_ok=True)
            shutil.rmtree(entry, ignore_errors=True)
            self.misses += 1
            return None
        self.hits += 1
        return record  # type: ignore[no-any-return]

    def store(self, key: str, path: Path, record: Mapping[str, object]) -> None:
        """Keep ``path`` and its ``record`` under ``key``, then evict down to the cap."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
            try:
                place(path, staging / MODEL_FILE)
                (staging / ENTRY_FILE).write_text(json.dumps(record, indent=1) + "\n",
                                                  encoding="utf-8")
                staging.rename(self.root / key)
            except OSError:
                # Another build stored the same key first (rename onto a full folder fails).
                if not (self.root / key / ENTRY_FILE).is_file():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self.prune()
        except OSError as exc:
            _log.warning("conversion cache %s is not writable (%s); the file is not kept",
                         self.root, exc.strerror or exc)

    def prune(self) -> list[str]:
        """Remove least recently used entries until the total is at most ``max_bytes``."""
        entries = []
        now = time.time()
        for entry in self.root.iterdir():
            with contextlib.suppress(OSError):
                used = entry.stat().st_mtime
                if entry.name.startswith("."):
                    if now - used > _STALE_STAGING_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)
                    continue
                size = sum(p.stat().st_size for p in entry.iterdir())
                entries.append((used, entry.name, size))
        total = sum(size for _used, _name, size in entries)
        evicted = []
        for _used, name, size in sorted(entries):
            if total <= self.max_bytes:
                break
            shutil.rmtree(self.root / name, ignore_errors=True)
            total -= size
            evicted.append(name)
        return evicted
