"""Repeat the SSH faults against a private loopback sshd and print the figures.

    python benchmarks/ssh_faults.py [--uploads 50] [--key-tries 20]

1. Uploads killed at a random point (the server and its sessions SIGKILLed),
   then retried: partial or corrupt files at a final path, retries that failed.
2. Unknown and changed host keys: commands run, bytes written, known_hosts changed.
3. Hostile names: extra commands run, files written outside the work folder.
4. Link down mid-job (a network-namespace board, root only): how long until the job
   failed as an infrastructure error, against the configured limit.
5. A model that segfaults the runtime (tests/models/segfaulting_tflite.py) between two
   real digits models, one job per try on a loopback sshd board, once per board Python
   (``--board-python``, e.g. a venv with tflite-runtime 2.14): how often the other two
   were measured and the crash was reported as that variant's SIGSEGV.

    python benchmarks/ssh_faults.py --only segfault --segv-tries 10 \
        --board-python python3 --board-python ~/.cache/edge-tests/tflite-runtime-2.14.0/bin/python

6. Lease take-over: ``--takeovers`` trials of 2 and of 4 processes (``--takeover-hosts``)
   taking over one expired lease at once (real ``board_lock`` on the local board, the owner
   file of a holder that crashed in this boot): trials where more than one held the board.
7. Two target files naming one loopback board (other work folder, other runtime):
   ``--overlap-jobs`` jobs from each, at once; overlapping holds in the board's lock.log.
8. Ctrl-C, SIGTERM and the deadline at random moments of ``--stop-jobs`` deploys each
   (loopback sshd board): agent processes left 2 s after edge exited, leases released
   before the job's processes had ended, staging folders left.
9. Fail fast: unknown and changed host key, sshd down, no numpy, missing runtime: seconds
   from ``deploy`` to its error, whether compression started, bytes placed on the board.
10. One board, many ways in: ``--identity-pairs`` pairs of hosts taking one loopback board
   (ed25519, rsa and ecdsa host keys) at once, through known_hosts files written by
   ``ssh-keyscan`` (all keys, rsa first; rsa only; ecdsa only), one as ``edge targets trust``
   writes it (ed25519), and (as root) a second login: the key type each negotiated, how many
   names the board got, overlapping holds.
11. A paused host: ``--paused-trials`` jobs SIGSTOPped right after taking a 2 s lease (or,
   every other trial, after their uploads), resumed while a second job that took the lease
   over measures: trials where the resumed job's agent ran (overlapping agents), where it did
   not stop itself with ``LeaseLostError``, where the second job's agent was killed or its
   result was not ok.

    python benchmarks/ssh_faults.py --only lease --only stops --only failfast --stop-jobs 20
    python benchmarks/ssh_faults.py --only identity --only paused --paused-trials 20
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import random
import sys
import tempfile
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Sshd, keygen
from tests.test_ssh_faults import HOSTILE, _KillingConnection
from toolkit.boards.ssh import Connection
from toolkit.boards.targets import Target, load_target
from toolkit.boards.transfer import upload
from toolkit.errors import EdgeError, HostKeyError, InfrastructureError


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def killed_uploads(root: Path, count: int, rng: random.Random) -> None:
    sshd = Sshd.create(root / "sshd-kill")
    sshd.write_target(root / "targets", "killed", root / "board-kill")
    target = load_target("killed", root / "targets")
    folder = root / "board-kill" / "cache"
    bad_final = failed_retries = interrupted = 0
    for _ in range(count):
        data = rng.randbytes(rng.randint(64 * 1024, 4 * 1024 * 1024))
        name = hashlib.sha256(data).hexdigest() + ".tflite"
        board = _KillingConnection(target)
        board.kill_at, board.sshd = rng.randint(0, len(data)), sshd
        try:
            upload(board, str(folder), name, data)
        except InfrastructureError:
            interrupted += 1
        if sshd.process is None:
            sshd.start()
        final = folder / name
        if final.exists() and hashlib.sha256(final.read_bytes()).hexdigest() != \
                final.name.split(".")[0]:
            bad_final += 1
        try:
            with Connection(target) as again:
                upload(again, str(folder), name, data)
        except EdgeError:
            failed_retries += 1
        if final.read_bytes() != data:
            bad_final += 1
    for final in folder.glob("*.tflite"):
        if hashlib.sha256(final.read_bytes()).hexdigest() != final.name.split(".")[0]:
            bad_final += 1
    sshd.kill()
    print(f"killed uploads: {count} tries, {interrupted} interrupted before placing, "
          f"{bad_final} partial or corrupt files at a final path, "
          f"{failed_retries} failed retries")


def host_keys(root: Path, tries: int) -> None:
    sshd = Sshd.create(root / "sshd-keys")
    other = keygen(root / "other_host_key").split()
    cases = {"unknown": "", "changed": f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n"}
    for case, content in cases.items():
        known = root / f"known_hosts_{case}"
        known.write_text(content)
        work = root / f"board-{case}"
        work.mkdir()
        sshd.write_target(root / "targets", case, work, known_hosts=str(known))
        target = load_target(case, root / "targets")
        refused = commands_run = 0
        marker = work / "ran"
        for _ in range(tries):
            try:
                with Connection(target) as board:
                    board.run(f"touch {marker}")
                    upload(board, str(work), "f.bin", b"x" * 100)
            except HostKeyError:
                refused += 1
            commands_run += marker.exists()
        written = sum(p.stat().st_size for p in files_under(work))
        print(f"{case} host key: {tries} tries, {refused} refused, {commands_run} commands run, "
              f"{written} bytes written, known_hosts unchanged: {known.read_text() == content}")
    sshd.kill()


def hostile_names(root: Path) -> None:
    sshd = Sshd.create(root / "sshd-names")
    work = root / "board-names"
    sshd.write_target(root / "targets", "names", work)
    target = load_target("names", root / "targets")
    with Connection(target) as board:
        home = Path(board.run("pwd").stdout.decode().strip())
    # Injected commands run in the login folder: watch its top level (others use it too, so
    # not recursively), the current folder, and everything of ours except the server's logs.
    def snapshot() -> set[Path]:
        ours = {p for p in files_under(root) if not p.is_relative_to(root / "sshd-names")}
        return ours | set(home.iterdir()) | set(Path.cwd().iterdir())

    before = snapshot()
    refused = 0
    for name in HOSTILE:
        try:
            with Connection(target) as board:
                upload(board, str(work), name, b"payload")
        except EdgeError:
            refused += 1
    outside = len({p for p in snapshot() - before if not p.is_relative_to(work)})
    sshd.kill()
    print(f"hostile names: {len(HOSTILE)} tried, {refused} refused, "
          f"{outside} files written outside the work folder (extra commands would leave files)")


def link_down(root: Path, tries: int) -> None:
    import os
    import threading
    import time

    from device_agent import protocol
    from tests.lab import Board
    from toolkit.run.runner import JobRunner

    if os.geteuid() != 0:
        print("link down: skipped (network namespaces need root)")
        return
    limit = 3.0
    board = Board("bench")
    sshd = Sshd.create(root / "sshd-link", address=board.address, netns=board.name)
    failures: list[float] = []
    wrong = 0
    try:
        from toolkit.compress import Fp32Config, compress
        from toolkit.model.load import load_model_source
        repo = Path(__file__).resolve().parent.parent
        variant = compress(load_model_source(repo / "examples" / "digits_cnn.py"),
                           Fp32Config(), root)
        sha = hashlib.sha256(variant.path.read_bytes()).hexdigest()
        for attempt in range(tries):
            subprocess_ip("link", "set", board.host_if, "up")
            work = root / f"work-link-{attempt}"
            sshd.write_target(root / "targets", "link", work, connect_timeout=limit,
                              keepalive_seconds=1)
            target = load_target("link", root / "targets")
            job = protocol.make_job(job_id=f"link-{attempt}", variants=[
                {"name": "fp32", "file": f"{sha}.tflite", "sha256": sha}],
                settings={"warmup_runs": 1, "min_runs": 5, "min_seconds": 120})
            pulled: list[float] = []

            def pull(work: Path = work, pulled: list[float] = pulled) -> None:
                while not list((work / "cache").glob("job-*.json")):
                    time.sleep(0.05)
                time.sleep(0.5)
                board.link_down()
                pulled.append(time.monotonic())

            puller = threading.Thread(target=pull, daemon=True)
            puller.start()
            try:
                JobRunner(target).run_job(job, {f"{sha}.tflite": variant.path})
                wrong += 1
            except InfrastructureError:
                failures.append(time.monotonic() - pulled[0])
            except EdgeError:
                wrong += 1
            puller.join()
    finally:
        sshd.kill()
        board.destroy()
    print(f"link down mid-job: {tries} tries, {len(failures)} infrastructure errors, "
          f"{wrong} other outcomes; seconds from link down to error: "
          f"min {min(failures):.1f}, max {max(failures):.1f} "
          f"(limit {limit:g} s + keepalive 1 s; must stay under {limit + 10:g} s)")


def segfault_among_three(root: Path, tries: int, board_pythons: list[str]) -> None:
    from device_agent import protocol
    from tests.models.segfaulting_tflite import write_segfaulting_tflite
    from toolkit.compress import Fp32Config, Int8StaticConfig, compress
    from toolkit.model.load import load_model_source
    from toolkit.run.runner import JobRunner

    source = load_model_source(Path(__file__).resolve().parent.parent / "examples" /
                               "digits_cnn.py")
    files = {"fp32": compress(source, Fp32Config(), root).path,
             "segfaults": write_segfaulting_tflite(root / "segfaults.tflite"),
             "int8": compress(source, Int8StaticConfig(), root).path}
    shas = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    sshd = Sshd.create(root / "sshd-segv")
    try:
        for python in board_pythons:
            sshd.write_target(root / "targets", "segv", root / "board-segv", python=python)
            target = load_target("segv", root / "targets")
            both_measured = crash_reported = 0
            errors: list[str] = []
            runtimes: set[str] = set()
            for attempt in range(tries):
                job = protocol.make_job(
                    job_id=f"segv-{attempt}",
                    variants=[{"name": name, "file": f"{sha}.tflite", "sha256": sha}
                              for name, sha in shas.items()],
                    settings={"warmup_runs": 2, "min_runs": 20, "min_seconds": 0.1,
                              "cooldown_seconds": 0})
                raw = JobRunner(target).run_job(
                    job, {f"{shas[name]}.tflite": path for name, path in files.items()})
                fp32, crashed, int8 = protocol.parse_result(raw, job)["variants"]
                both_measured += fp32["status"] == int8["status"] == "ok" and \
                    min(fp32["runs"], int8["runs"]) >= 20
                crash_reported += crashed["status"] == "failed" and \
                    crashed["error"].startswith("killed by signal SIGSEGV")
                errors.append(crashed.get("error", "(none)"))
                runtimes.update(f"{v['runtime']['name']} {v['runtime']['version']}"
                                for v in (fp32, int8) if "runtime" in v)
            print(f"segfaulting model among three on {', '.join(sorted(runtimes)) or python}: "
                  f"{tries} jobs, other two measured in {both_measured}, crash reported as "
                  f"SIGSEGV in {crash_reported}; its error: {sorted(set(errors))}")
    finally:
        sshd.kill()


def _expired_owner() -> str:
    """An owner file in today's format whose lease ended 5 s ago, in this boot: the
    crashed holder every take-over trial starts from."""
    import time

    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    now = int(time.time())
    return (f"crashed\n{now - 5}\n{now - 65}\n{uuid.uuid4().hex}\n{boot_id}\n"
            f"{int(uptime) - 5}\n")


def _take_over(target: Target, home: Path, start: Barrier, done: Barrier,
               held: Queue[int]) -> None:
    """One host's attempt (a process of its own): take the expired lease, hold it until
    every host has tried, then release it."""
    from toolkit.boards.board import LocalBoard
    from toolkit.boards.lease import board_lock
    from toolkit.errors import BoardBusyError

    board = LocalBoard(target, home=home)
    start.wait()
    try:
        with board_lock(board, seconds=60):
            held.put(os.getpid())
            done.wait()
            return
    except BoardBusyError:
        pass
    done.wait()


def takeovers(root: Path, trials: int, hosts: int) -> None:
    """``trials`` races of ``hosts`` processes taking over one expired lease at once."""
    import multiprocessing
    import queue

    from toolkit.boards.board import LocalBoard
    from toolkit.boards.lease import lease_dir

    (root / "targets").mkdir(exist_ok=True)
    (root / "targets" / "here.toml").write_text('transport = "local"\n')
    target = load_target("here", root / "targets")
    home = root / "local-board"
    owner = home / lease_dir(LocalBoard(target, home=home)) / "owner"
    owner.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("fork")
    double = nobody = 0
    for _ in range(trials):
        owner.write_text(_expired_owner())
        start, done, held = context.Barrier(hosts), context.Barrier(hosts), context.Queue()
        workers = [context.Process(target=_take_over, args=(target, home, start, done, held))
                   for _ in range(hosts)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        holders = []
        with contextlib.suppress(queue.Empty):
            while True:
                holders.append(held.get(timeout=0.2))
        double += len(holders) > 1
        nobody += not holders
    print(f"lease take-over: {trials} trials of {hosts} processes taking over one expired "
          f"lease at once: {double} double holds, {nobody} with no holder")


def overlapping_jobs(root: Path, jobs: int) -> None:
    import threading
    import time

    from device_agent import protocol
    from toolkit.boards.board import SshBoard
    from toolkit.boards.lease import lease_dir
    from toolkit.errors import BoardBusyError
    from toolkit.run.runner import JobRunner

    model = _digits_fp32(root)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    sshd = Sshd.create(root / "sshd-overlap")
    try:
        sshd.write_target(root / "targets", "pi-a", root / "work-a")
        sshd.write_target(root / "targets", "pi-b", root / "work-b", runtime="ai-edge-litert")
        targets = [load_target(name, root / "targets") for name in ("pi-a", "pi-b")]
        with SshBoard(targets[0]) as board:
            lock_log = (Path(board.run("pwd").stdout.decode().strip()) / lease_dir(board)
                        / "lock.log")
        before = lock_log.read_text() if lock_log.exists() else ""
        failed: list[str] = []

        def run_all(target: Target) -> None:
            for index in range(jobs):
                job = protocol.make_job(
                    job_id=f"{target.name}-{index}",
                    variants=[{"name": "fp32", "file": f"{sha}.tflite", "sha256": sha}],
                    settings={"warmup_runs": 1, "min_runs": 5, "min_seconds": 0.3,
                              "cooldown_seconds": 0})
                while True:
                    try:
                        JobRunner(target).run_job(job, {f"{sha}.tflite": model})
                        break
                    except BoardBusyError:
                        time.sleep(0.2)
                    except EdgeError as exc:
                        failed.append(str(exc))
                        break

        threads = [threading.Thread(target=run_all, args=(t,)) for t in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events = sorted((float(when), event, owner) for when, event, owner in
                        (line.split(" ", 2) for line in
                         lock_log.read_text()[len(before):].splitlines()))
        overlaps = holders = 0
        holding: set[str] = set()
        for _, event, owner in events:
            if event in ("acquire", "takeover"):
                overlaps += bool(holding)
                holders += 1
                holding.add(owner)
            else:
                holding.discard(owner)
    finally:
        sshd.kill()
    print(f"two target files, one board: {2 * jobs} jobs, {holders} leases held, "
          f"{overlaps} overlapping holds in lock.log, {len(failed)} failed jobs")


def _digits_fp32(root: Path) -> Path:
    from toolkit.compress import Fp32Config, compress
    from toolkit.model.load import load_model_source

    made = root / "digits-fp32" / "fp32.tflite"
    if not made.exists():
        repo = Path(__file__).resolve().parent.parent
        made = compress(load_model_source(repo / "examples" / "digits_cnn.py"), Fp32Config(),
                        root / "digits-fp32").path
    return made


def stops(root: Path, jobs: int, rng: random.Random) -> None:
    import os
    import signal
    import subprocess
    import time

    from tests.test_runner import Watcher, processes_in, releases
    from toolkit.boards.board import SshBoard
    from toolkit.boards.lease import lease_dir

    model = _digits_fp32(root)
    repo = Path(__file__).resolve().parent.parent
    sshd = Sshd.create(root / "sshd-stops")
    try:
        for how in ("Ctrl-C", "SIGTERM", "deadline"):
            left = early_release = staging = 0
            for index in range(jobs):
                work = root / f"work-{how}-{index}"
                sshd.write_target(root / "targets", "stops", work)
                target = load_target("stops", root / "targets")
                with SshBoard(target) as board:
                    lease = Path(board.run("pwd").stdout.decode().strip()) / lease_dir(board)
                out = root / f"out-{how}-{index}"
                extra = (["--cooldown", "0", "--min-seconds", "2"] if how == "deadline"
                         else ["--min-seconds", "6"])
                env = {**os.environ, "PYTHONPATH": str(repo)}
                if how == "deadline":
                    # The job's budget, shortened so it falls at a random moment of the job.
                    env["EDGE_TEST_JOB_BUDGET"] = f"{rng.uniform(0.5, 4.0):.2f}"
                edge = subprocess.Popen(
                    [sys.executable, "-c", _DEPLOY_WITH_BUDGET, str(model), "--target", "stops",
                     "--targets-dir", str(root / "targets"), "--recipe", "fp32", "-o", str(out),
                     *extra], cwd=root, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                watcher = Watcher(work)
                if how != "deadline":
                    time.sleep(rng.uniform(0.5, 8.0))  # anywhere from start-up to measuring
                    edge.send_signal(signal.SIGINT if how == "Ctrl-C" else signal.SIGTERM)
                edge.wait(timeout=120)
                time.sleep(2)
                left += len(processes_in(work))
                watcher.stop()
                if watcher.last_seen and lease.joinpath("lock.log").exists():
                    done = releases(lease / "lock.log")
                    early_release += not done or done[-1] < watcher.last_seen
                staging += len(list(out.glob(".staging-*")))
            print(f"{how} at random moments: {jobs} deploys, {left} agent processes left 2 s "
                  f"after edge exited, {early_release} leases released before the job's "
                  f"processes ended, {staging} staging folders left")
    finally:
        sshd.kill()


#: ``edge deploy`` with the job budget from $EDGE_TEST_JOB_BUDGET (the deadline case only).
_DEPLOY_WITH_BUDGET = (
    "import os, sys\n"
    "from toolkit import runner\n"
    "from toolkit.cli.main import main\n"
    "budget = os.environ.get('EDGE_TEST_JOB_BUDGET')\n"
    "if budget:\n"
    "    runner.job_budget_seconds = lambda job: float(budget)\n"
    "sys.argv = ['edge', 'deploy', *sys.argv[1:]]\n"
    "main()\n")


def fail_fast(root: Path) -> None:
    import time

    from tests.test_runner import FAULTS, fault_target
    from toolkit.model.load import load_model_source
    from toolkit.run import deploy as pipeline
    from toolkit.run import prepare

    repo = Path(__file__).resolve().parent.parent
    model = repo / "examples" / "digits_cnn.py"
    load_model_source(model)  # imports paid once, outside the timings
    real_prepare = prepare.prepare_model
    for fault, expected in FAULTS.items():
        folder = root / f"fail-{fault.replace(' ', '-')}"
        folder.mkdir()
        sshd = Sshd.create(folder / "sshd")
        try:
            target = fault_target(fault, sshd, folder)
            compressed: list[bool] = []

            def spy(*args: object, compressed: list[bool] = compressed,
                    **kwargs: object) -> object:
                compressed.append(True)
                return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

            prepare.prepare_model = spy  # type: ignore[assignment]
            started = time.monotonic()
            try:
                pipeline.deploy(model, targets=[target.name], recipes="fp32",
                                out_dir=folder / "out", targets_dir=folder / "targets")
                outcome = "no error"
            except EdgeError as exc:
                outcome = type(exc).__name__ + ("" if isinstance(exc, expected) else " (!)")
            seconds = time.monotonic() - started
        finally:
            prepare.prepare_model = real_prepare  # type: ignore[assignment]
            sshd.kill()
        board = folder / "board"
        placed = sum(p.stat().st_size for p in files_under(board)) if board.exists() else 0
        print(f"fail fast, {fault}: {outcome} after {seconds:.2f} s, compression started: "
              f"{bool(compressed)}, {placed} bytes placed on the board")


def one_board_many_ways(root: Path, pairs: int) -> None:
    import itertools
    import pwd
    import shutil
    import subprocess
    import threading
    import time

    from tests.test_lease import PEER
    from toolkit.boards.board import SshBoard
    from toolkit.boards.lease import board_lock
    from toolkit.errors import BoardBusyError

    peer = made = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PEER)
        except KeyError:
            subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", PEER],
                           check=True, capture_output=True)
            made = PEER
        subprocess.run(["usermod", "-p", "*", PEER], check=True, capture_output=True)
        peer = PEER
    shared = Path(tempfile.mkdtemp(prefix="edge-identity-", dir="/tmp"))
    shared.chmod(0o755)
    sshd = Sshd.create(shared / "sshd", host_keys=("ed25519", "rsa", "ecdsa"),
                       users=(peer,) if peer else (), lease_root=shared / "leases")
    try:
        def keyscan(kinds: str) -> Path:
            scanned = root / f"known_hosts.keyscan-{kinds}"
            scanned.write_text(subprocess.run(
                ["ssh-keyscan", "-t", kinds, "-p", str(sshd.port), sshd.address],
                capture_output=True, text=True, check=True).stdout)
            return scanned

        # Whatever known_hosts lists, SSH negotiates one of its key types: every type once.
        sshd.write_target(root / "targets", "trusted", root / "w-trusted")
        sshd.write_target(root / "targets", "scanned", root / "w-scanned",
                          known_hosts=str(keyscan("rsa,ecdsa,ed25519")))
        sshd.write_target(root / "targets", "rsa", root / "w-rsa",
                          known_hosts=str(keyscan("rsa")))
        sshd.write_target(root / "targets", "ecdsa", root / "w-ecdsa",
                          known_hosts=str(keyscan("ecdsa")))
        names = ["trusted", "scanned", "rsa", "ecdsa"]
        if peer:
            sshd.write_target(root / "targets", "peer", Path("/tmp"), user=peer,
                              known_hosts=str(keyscan("rsa")))
            names.append("peer")
        targets = [load_target(name, root / "targets") for name in names]
        boards = [SshBoard(t) for t in targets]
        kinds = {b.target.name: b.connection.client.get_transport()
                 .get_remote_server_key().get_name() for b in boards}
        identities = {b.identity() for b in boards}
        for board in boards:
            board.close()
        holds: list[tuple[float, float, str]] = []
        combos = itertools.cycle(itertools.combinations(targets, 2))

        def take(target: Target, start: threading.Barrier) -> None:
            with SshBoard(target) as board:
                board.identity()
                start.wait()
                while True:
                    try:
                        with board_lock(board, seconds=60):
                            began = time.monotonic()
                            time.sleep(0.2)
                            holds.append((began, time.monotonic(), target.name))
                            return
                    except BoardBusyError:
                        time.sleep(0.05)

        for _ in range(pairs):
            start = threading.Barrier(2)
            workers = [threading.Thread(target=take, args=(t, start)) for t in next(combos)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        holds.sort()
        overlaps = sum(1 for a, b in itertools.pairwise(holds) if b[0] < a[1])
        print(f"one board, many ways in: {' / '.join(f'{n} ({k})' for n, k in kinds.items())}"
              f" -> {len(identities)} board name(s); {pairs} concurrent pairs, {len(holds)} "
              f"holds, {overlaps} overlapping")
    finally:
        sshd.kill()
        shutil.rmtree(shared, ignore_errors=True)
        if made:
            subprocess.run(["userdel", made], check=False, capture_output=True)


def paused_hosts(root: Path, trials: int) -> None:
    from tests.test_lease import paused_host_trial

    model = _digits_fp32(root)
    overlapping = not_stopped = holder_hurt = 0
    for trial in range(trials):
        folder = root / f"paused-{trial}"
        os.environ["EDGE_LEASE_ROOT"] = str(folder / "leases")
        os.environ["EDGE_LOCAL_BOARD"] = str(folder / "local-board")
        outcome = paused_host_trial(model, f"p{trial}", ("build", "prune")[trial % 2])
        overlapping += bool(outcome["overlap"])
        if outcome["overlap"] or outcome["status"] != 3:
            print(f"  trial {trial}: {outcome}")
        not_stopped += outcome["status"] != 3 or "LeaseLostError" not in str(outcome["stderr"])
        holder_hurt += bool(outcome["holder_killed"]) or outcome["holder"] != ["ok"]
    print(f"paused host: {trials} trials (SIGSTOP after the acquire / after the uploads, a 2 s "
          f"lease, taken over, SIGCONT while the new holder measures): {overlapping} with "
          f"overlapping agents, {not_stopped} where the resumed job did not stop itself, "
          f"{holder_hurt} where the new holder's job was hurt")


def subprocess_ip(*args: str) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True, capture_output=True)


def main() -> None:
    # paramiko logs every reset socket at ERROR; the figures are what this script is for.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--key-tries", type=int, default=20)
    parser.add_argument("--link-tries", type=int, default=5)
    parser.add_argument("--segv-tries", type=int, default=10)
    parser.add_argument("--board-python", action="append", metavar="PYTHON",
                        help="Python the segfault board runs the agent with (repeatable) "
                             "[default: this one]")
    parser.add_argument("--takeovers", type=int, default=300)
    parser.add_argument("--takeover-hosts", type=int, action="append", metavar="N",
                        help="processes racing in each take-over trial (repeatable) "
                             "[default: 2 and 4]")
    parser.add_argument("--overlap-jobs", type=int, default=5,
                        help="jobs per target file, two target files naming one board")
    parser.add_argument("--stop-jobs", type=int, default=3,
                        help="deploys stopped by each of Ctrl-C, SIGTERM and the deadline")
    parser.add_argument("--identity-pairs", type=int, default=20)
    parser.add_argument("--paused-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4)
    every = ["uploads", "keys", "names", "link", "segfault", "lease", "overlap", "stops",
             "failfast", "identity", "paused"]
    parser.add_argument("--only", choices=every, action="append",
                        help="run only these faults (repeatable)")
    args = parser.parse_args()
    chosen = set(args.only or every)
    with tempfile.TemporaryDirectory(prefix="edge-faults-") as folder:
        root = Path(folder)
        # The local board's leases stay in this run's folder, not in this machine's
        # /tmp/edge-leases, where real jobs may hold it.
        os.environ.setdefault("EDGE_LEASE_ROOT", str(root / "leases"))
        if "uploads" in chosen:
            killed_uploads(root, args.uploads, random.Random(args.seed))
        if "keys" in chosen:
            host_keys(root, args.key_tries)
        if "names" in chosen:
            hostile_names(root)
        if "link" in chosen:
            link_down(root, args.link_tries)
        if "segfault" in chosen:
            segfault_among_three(root, args.segv_tries, args.board_python or [sys.executable])
        if "lease" in chosen:
            for hosts in args.takeover_hosts or [2, 4]:
                takeovers(root, args.takeovers, hosts)
        if "overlap" in chosen:
            overlapping_jobs(root, args.overlap_jobs)
        if "stops" in chosen:
            stops(root, args.stop_jobs, random.Random(args.seed))
        if "failfast" in chosen:
            fail_fast(root)
        if "identity" in chosen:
            one_board_many_ways(root, args.identity_pairs)
        if "paused" in chosen:
            paused_hosts(root, args.paused_trials)


if __name__ == "__main__":
    main()
