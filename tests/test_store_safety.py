"""The store never loses a measured run: it waits for other writers, and a run it cannot
take stays in its folder, importable later (issue 26, item 11)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from toolkit import store as store_module
from toolkit.errors import StoreError
from toolkit.store import ResultsStore

from .records import make_run, record


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
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(store_module, "LOCK_RETRIES", 1)
    holder = hold_write_lock(path, 2.0)
    try:
        with pytest.raises(StoreError) as caught:
            ResultsStore(path)
    finally:
        holder.join()
    assert str(caught.value) == (f"results store {path} stayed locked by other writers "
                                 "through 2 waits of 0.05 s")
