"""A private PostgreSQL server for the store tests, started and stopped by a fixture.

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` user that
Debian's package creates; it listens on a free loopback port and a private socket folder,
trusts local connections, and is deleted afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .lab import free_port

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    if not BIN_DIRS or not (BIN_DIRS[0] / "initdb").exists():
        return "PostgreSQL server binaries missing (scripts/install-dev.sh installs postgresql)"
    if os.geteuid() != 0:
        return "starting a cluster as the postgres user needs root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (Debian's postgresql package creates it)"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield ``postgresql://edge:secret@127.0.0.1:PORT/postgres`` for a fresh cluster."""
    bin_dir = BIN_DIRS[0]
    root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=120)

    try:
        as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "edge")
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start")
        yield f"postgresql://edge:secret@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


#: The PostgreSQL schema exactly as schema-2 edge created it (``POSTGRES_SCHEMA`` in
#: toolkit/results/store.py before migrations came to PostgreSQL), with its version table: databases
#: in labs look like this, and the current code must carry them forward.
SCHEMA_2_DDL = """
    CREATE TABLE edge_schema (version INTEGER NOT NULL);
    INSERT INTO edge_schema VALUES (2);
    CREATE TABLE runs (
        seq          BIGSERIAL UNIQUE,
        run_id       TEXT PRIMARY KEY,
        created_at   TEXT NOT NULL,
        model_name   TEXT NOT NULL,
        model_path   TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        report_dir   TEXT NOT NULL,
        git_commit   TEXT
    );
    CREATE TABLE results (
        seq      BIGSERIAL,
        run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        target   TEXT NOT NULL,
        variant  TEXT NOT NULL,
        status   TEXT NOT NULL,
        record   TEXT NOT NULL,
        PRIMARY KEY (run_id, target, variant)
    );
    CREATE TABLE tags (
        name       TEXT PRIMARY KEY,
        run_id     TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
            DEFAULT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS+00:00')
    );
    CREATE INDEX runs_by_time ON runs(created_at, run_id);
"""
