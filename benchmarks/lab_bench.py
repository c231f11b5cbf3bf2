"""Issue 7's lab figures: 8 boards as network namespaces, each its own sshd behind a slow link.

Prints:

1. 8 boards x 3 variants of a tiny model, against 1 board alone: wall time ratio (<= 1.5x).
2. 2 of 8 boards killed mid-run (their sshd and every session it forked): the other 6
   complete, the 2 are infrastructure errors, and `edge bench` exits 3 (incomplete).
3. Two `edge bench` processes started together on the same 4 boards: overlapping jobs on
   any board, from each board's own lock log (must be 0), and both exit 0.  Both write to
   one PostgreSQL store (a private server, as in tests/postgres.py) when it can be started.
4. Two processes writing runs to that PostgreSQL store at once (``--pg-runs`` each): every
   run present, none duplicated.

Each board's link gets a delay from a userspace TCP proxy (``tc netem`` is not available
here): every chunk is delivered ``--delay-ms`` later in each direction, so, as in a real lab,
time goes to the network and the boards rather than to this machine's 2 CPUs.  All boards
still share this machine's CPUs: their latencies are measured concurrently on one machine
(the reports say so).  Needs root (network namespaces).

    python benchmarks/lab_bench.py [--boards 8] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab import Board, Sshd, free_port  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402
from tests.postgres import unavailable as postgres_unavailable  # noqa: E402

TINY_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()

    def example_input():
        return (torch.randn(1, 16),)
''')
RECIPES = "fp32,fp16,int8-dynamic"
MEASURE = ["--min-runs", "50", "--min-seconds", "0.2"]
#: Part 1 measures orchestration: a tiny model and no time floors, so the boards' own work
#: (which here runs on this machine's 2 CPUs, not on 8 boards) stays small.
TINY_SETTINGS = {"min_runs": 50, "min_seconds": 0.0, "warmup_runs": 5, "warmup_seconds": 0.0}


class DelayProxy:
    """Forward 127.0.0.1:port to (host, port_to), each chunk ``delay`` s late each way."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay, self.port = upstream, delay, free_port()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()


def start_proxies(proxies: list[DelayProxy]) -> multiprocessing.Process:
    """The delays run in a process of their own: the link is not part of edge's host process."""
    async def serve_all() -> None:
        await asyncio.gather(*(proxy.serve() for proxy in proxies))

    process = multiprocessing.get_context("fork").Process(
        target=asyncio.run, args=(serve_all(),), daemon=True)
    process.start()
    for proxy in proxies:  # wait until every proxy listens
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
    return process


def write_target(folder: Path, name: str, sshd: Sshd, proxy: DelayProxy, work: Path) -> None:
    """A target reaching ``sshd`` through ``proxy``; its host key is known under the proxy."""
    known = folder / f"{name}.known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {' '.join(sshd.host_public_key.split()[:2])}\n")
    (folder / f"{name}.toml").write_text(
        f'transport = "ssh"\nhost = "127.0.0.1"\nport = {proxy.port}\nuser = "{sshd.user}"\n'
        f'identity = "{sshd.client_key}"\nknown_hosts = "{known}"\npython = "{sys.executable}"\n'
        f'work_dir = "{work}"\nconnect_timeout = 5.0\ncommand_timeout = 60.0\nretries = 1\n')


def edge_bench(model: Path, names: list[str], folder: Path, out: str,
               store: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", "bench", str(model), "--targets", ",".join(names),
         "--targets-dir", str(folder / "targets"), "--recipe", RECIPES, "-o",
         str(folder / out), "--store", store or str(folder / f"{out}.sqlite"), "--json",
         *MEASURE],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    out, err = process.communicate(timeout=1800)
    try:
        answer = json.loads(out)
    except json.JSONDecodeError:
        raise SystemExit(f"edge bench printed no JSON (exit {process.returncode}):\n"
                         f"{err[-3000:]}") from None
    return process.returncode, answer, time.monotonic() - started


def timed_bench(model: Path, names: list[str], folder: Path, out: str) -> tuple[float, float, list]:
    """(whole wall time, matrix wall time from the first job started, cells) of one bench."""
    from toolkit.boards.lab import load_lab
    from toolkit.run.bench import bench

    first_job: list[float] = []

    def on_event(event: object) -> None:
        if not first_job and getattr(event, "state", "") == "running":
            first_job.append(time.monotonic())

    started = time.monotonic()
    outcome = bench([model], targets=load_lab(None, folder / "targets").select(names),
                    recipes=RECIPES, out_dir=folder / out, store_path=folder / f"{out}.sqlite",
                    settings=TINY_SETTINGS, on_event=on_event)
    ended = time.monotonic()
    if not outcome.complete:
        raise SystemExit(f"bench on {names} incomplete: {outcome.cells}")
    return ended - started, ended - first_job[0], outcome.cells


#: One writer of part 4: ``count`` runs of two variants each, a store connection per run
#: (as separate `edge deploy` processes would), into the shared database.
PG_WRITER = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from tests.records import make_run, record
    from toolkit.results.store import ResultsStore
    url, who, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
    for index in range(count):
        with ResultsStore(url) as store:
            store.add_run(make_run(f"{who}-{index}", [record("fp32"), record("int8")]))
''')


def concurrent_postgres_writes(url: str, count: int) -> str:
    """Part 4: two writer processes at once; what the store holds afterwards."""
    from toolkit.results.store import ResultsStore

    with ResultsStore(url) as store:
        before = set(store.run_ids())
    started = time.monotonic()
    writers = [subprocess.Popen([sys.executable, "-c", PG_WRITER, str(REPO), url, who,
                                 str(count)], stderr=subprocess.PIPE, text=True)
               for who in ("lab-a", "lab-b")]
    codes = [writer.wait(timeout=600) for writer in writers]
    elapsed = time.monotonic() - started
    with ResultsStore(url) as store:
        ids = [run_id for run_id in store.run_ids() if run_id not in before]
        records = sum(len(store.get_run(run_id).results) for run_id in ids)
    expected = {f"{who}-{i}" for who in ("lab-a", "lab-b") for i in range(count)}
    return (f"4. two processes writing {count} runs each to PostgreSQL at once ({elapsed:.1f} s, "
            f"exit statuses {codes}): {len(set(ids) & expected)} of {len(expected)} runs present, "
            f"{len(ids) - len(set(ids))} duplicated, {records} variant records (expected "
            f"{2 * len(expected)})")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def lock_log(targets: Path, name: str) -> Path:
    """The board's lock log: in its lease folder, under the login's home (toolkit.boards.lease)."""
    from toolkit.boards.board import SshBoard
    from toolkit.boards.lease import lease_dir
    from toolkit.boards.targets import load_target

    with SshBoard(load_target(name, targets)) as board:
        return Path(board.run("pwd").stdout.decode().strip()) / lease_dir(board) / "lock.log"


def overlaps(log: Path) -> tuple[int, int]:
    """(overlapping job pairs, jobs) from a board's lock log of acquire/release lines."""
    intervals, opened = [], {}
    for line in log.read_text().splitlines():
        when, event, owner = line.split(" ", 2)
        if event in ("acquire", "takeover"):
            opened[owner] = float(when)
        elif event == "release" and owner in opened:
            intervals.append((opened.pop(owner), float(when)))
    intervals.sort()
    clashes = sum(1 for (_, end), (start, _) in itertools.pairwise(intervals) if start < end)
    return clashes, len(intervals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--pg-runs", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("network namespaces need root")

    made: list[tuple[Board, Sshd]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "targets").mkdir()
        model = folder / "tiny.py"
        model.write_text(TINY_MODEL)
        try:
            proxies = []
            for index in range(args.boards):
                board = Board(f"lab{index}")
                made.append((board, Sshd.create(folder / f"sshd-{index}",
                                                address=board.address, netns=board.name)))
                proxies.append(DelayProxy((board.address, made[-1][1].port),
                                          args.delay_ms / 1000))
            link = start_proxies(proxies)
            names = [f"board-{i}" for i in range(args.boards)]
            for index, name in enumerate(names):
                write_target(folder / "targets", name, made[index][1], proxies[index],
                             folder / f"work-{index}")
            print(f"{args.boards} boards (network namespaces, own sshd each), link delay "
                  f"{args.delay_ms:g} ms each way, model {RECIPES}; load average "
                  f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

            # Every board gets the agent and the artifacts first, so both timed benches find
            # them cached: like against like, as in a lab that runs the same model daily.
            timed_bench(model, names, folder, "warm")
            before = cpu_ticks()
            one, one_matrix, _ = timed_bench(model, names[:1], folder, "one")
            middle = cpu_ticks()
            many, many_matrix, cells = timed_bench(model, names, folder, "many")
            after = cpu_ticks()
            busy_one = (middle[0] - before[0]) / (middle[1] - before[1])
            busy_many = (after[0] - middle[0]) / (after[1] - middle[1])
            print(f"1. 1 board x 3 variants: {one:.1f} s ({one_matrix:.1f} s on the board); "
                  f"{args.boards} boards x 3 variants: {many:.1f} s ({many_matrix:.1f} s on the "
                  f"boards; {len(cells)} cells, all ok: {all(c.status == 'ok' for c in cells)}); "
                  f"ratio {many / one:.2f}x whole, {many_matrix / one_matrix:.2f}x boards' part "
                  f"(must be at most 1.5x: {'yes' if many / one <= 1.5 else 'NO'}); host "
                  f"compression of the 3 variants is in both; this machine's CPUs busy "
                  f"{busy_one:.0%} (1 board) and {busy_many:.0%} (all boards)")

            victims = [0, 1]
            process = edge_bench(model, names, folder, "killed")
            deadline = time.monotonic() + 300
            pending = set(victims)
            while pending and time.monotonic() < deadline:  # kill each while it holds its lock
                for index in list(pending):
                    if (folder / f"work-{index}" / "lock").exists():
                        made[index][1].kill()
                        pending.discard(index)
                time.sleep(0.01)
            code, answer, _ = finish(process)
            status: dict[str, set[str]] = {}
            for cell in answer["cells"]:
                status.setdefault(cell["target"], set()).add(
                    cell["status"] + (f"/{cell['error_class']}" if cell["error_class"] else ""))
            survivors = [n for n in names if n not in {names[i] for i in victims}]
            complete = sum(status[n] == {"ok"} for n in survivors)
            infra = sum(status[names[i]] == {"error/infrastructure"} for i in victims)
            print(f"2. {len(victims)} of {args.boards} boards killed mid-run: {complete} of "
                  f"{len(survivors)} others complete, {infra} of {len(victims)} reported as "
                  f"infrastructure errors, exit status {code} (3 = matrix incomplete)")

            for index in victims:
                made[index][1].start()
            with contextlib.ExitStack() as database:
                why_not = postgres_unavailable()
                url = None if why_not else database.enter_context(postgres_server())
                four = names[2:6]
                first = edge_bench(model, four, folder, "concurrent-1", url)
                second = edge_bench(model, four, folder, "concurrent-2", url)
                codes = [finish(first)[0], finish(second)[0]]
                clashes = jobs = 0
                for index in range(2, 6):
                    found, count = overlaps(lock_log(folder / "targets", names[index]))
                    clashes, jobs = clashes + found, jobs + count
                print(f"3. two edge bench processes on the same 4 boards: exit statuses "
                      f"{codes}; {jobs} jobs in the boards' lock logs, {clashes} overlapping "
                      f"(must be 0); store: {'one PostgreSQL' if url else 'SQLite each'}")
                print(concurrent_postgres_writes(url, args.pg_runs) if url
                      else f"4. skipped: {why_not}")
        finally:
            if "link" in locals():
                link.kill()
            for board, sshd in made:
                sshd.kill()
                board.destroy()


if __name__ == "__main__":
    main()
