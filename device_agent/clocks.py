"""Clock policy: the CPU frequency governor and clocks per cluster, Jetson power modes, and
setting the governor for a job.

A latency measured under ``schedutil`` or ``ondemand`` depends on the load the governor
saw (a short model may never raise the clock), and a Jetson without ``jetson_clocks`` or
in a low ``nvpmodel`` mode is slower by design: the record says which held.  CPUs that
share a clock form a cluster (a cpufreq *policy*: ``policyN/related_cpus``); each is read
once.  The root is injectable, so tests pass a constructed tree laid out as ``/``.

Example::

    state = clock_state()      # {"governor": "schedutil", "clusters": [{"cpus": [0, 1, 2, 3],
                               #   "governor": "schedutil", "cur_mhz": 1800.0, ...}]}
    change = GovernorChange("performance")
    change.apply()             # where scaling_governor is writable; change.failure if not
    ...
    change.restore()
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .power import Runner, run_command
from .wire import ClockState, ClusterClock, JetsonClocks

#: What ``governor`` says on a board whose kernel exposes no cpufreq (a VM, a container).
NOT_EXPOSED = "not exposed"
#: What ``governor`` says when the clusters that ran have different governors.
MIXED = "mixed"
#: The governor that gives figures independent of the load the governor sees.
STEADY_GOVERNOR = "performance"
#: ``nvpmodel -q`` prints ``NV Power Mode: MAXN`` then the mode's number.
_NVPMODEL_NAME = re.compile(r"NV Power Mode:\s*(\S+)")
#: The status file nvpmodel keeps: ``pmode:0000 fmode:...``.
_NVPMODEL_STATUS = re.compile(r"pmode:\s*(\d+)")

CPUFREQ = "sys/devices/system/cpu/cpufreq"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _mhz(path: Path) -> Optional[float]:
    """A cpufreq file (kHz) in MHz, or None when it is absent or unreadable."""
    try:
        return int(_read(path)) / 1000.0
    except ValueError:
        return None


def parse_cpu_list(text: str) -> List[int]:
    """``"0-3 6,7"`` (the kernel's CPU list forms) -> ``[0, 1, 2, 3, 6, 7]``."""
    cpus: Set[int] = set()
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            cpus.update(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return sorted(cpus)


def cluster_folders(root: Path = Path("/")) -> List[Tuple[List[int], Path]]:
    """Each cluster's CPUs and its cpufreq folder: the policy folders, or (older kernels,
    no ``cpufreq/policy*``) each CPU's ``cpufreq`` folder, grouped by ``related_cpus``."""
    found: List[Tuple[List[int], Path]] = []
    policies = sorted(glob.glob(str(root / CPUFREQ / "policy[0-9]*")),
                      key=lambda p: int(re.sub(r"\D", "", Path(p).name) or 0))
    folders = [Path(p) for p in policies] or [
        Path(p) for p in sorted(glob.glob(str(root / "sys/devices/system/cpu/cpu[0-9]*/cpufreq")),
                                key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name)))]
    seen: Set[int] = set()
    for folder in folders:
        cpus = parse_cpu_list(_read(folder / "related_cpus") or _read(folder / "affected_cpus"))
        if not cpus and folder.name == "cpufreq":  # a per-CPU folder names its own CPU
            cpus = [int(re.sub(r"\D", "", folder.parent.name))]
        if not cpus or seen & set(cpus):
            continue  # a per-CPU folder of a cluster already read
        seen.update(cpus)
        found.append((cpus, folder))
    return found


def _cluster(cpus: List[int], folder: Path) -> ClusterClock:
    cluster: ClusterClock = {"cpus": cpus, "governor": _read(folder / "scaling_governor")}
    cur, low, high, top = (_mhz(folder / name) for name in (
        "scaling_cur_freq", "scaling_min_freq", "scaling_max_freq", "cpuinfo_max_freq"))
    # A clock file the kernel does not expose (or refuses to this user) is left out.
    if cur is not None:
        cluster["cur_mhz"] = cur
    if low is not None:
        cluster["min_mhz"] = low
    if high is not None:
        cluster["max_mhz"] = high
    if top is not None:
        cluster["cpuinfo_max_mhz"] = top
    return cluster


def _running_cpus() -> Optional[Set[int]]:
    """The CPUs this process may run on (its measuring children inherit them), or None
    where the platform does not say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def governor_of(clusters: Sequence[ClusterClock], cpus: Optional[Set[int]] = None) -> str:
    """The governor of the clusters holding ``cpus`` (all when None): one name, ``mixed``
    when they differ, ``not exposed`` without any."""
    ran = [c for c in clusters if cpus is None or cpus & set(c["cpus"])] or list(clusters)
    names = {c["governor"] for c in ran if c.get("governor")}
    if not names:
        return NOT_EXPOSED
    return names.pop() if len(names) == 1 else MIXED


def jetson_clocks(root: Path = Path("/"), runner: Optional[Runner] = None,
                  clusters: Sequence[ClusterClock] = ()) -> Optional[JetsonClocks]:
    """The ``nvpmodel`` mode and whether ``jetson_clocks`` looks applied, on a Jetson (one
    with ``/etc/nvpmodel.conf``); None elsewhere.

    ``jetson_clocks`` pins each cluster's minimum clock to its maximum: min == max on every
    cluster is its usual sign (the tool itself needs root to ask).
    """
    if not (root / "etc/nvpmodel.conf").is_file():
        return None
    facts: JetsonClocks = {}
    try:
        query = (runner or run_command)(["nvpmodel", "-q"])
    except OSError:
        query = ""
    named = _NVPMODEL_NAME.search(query)
    if named:
        facts["nvpmodel"] = named.group(1)
        facts["nvpmodel_source"] = "nvpmodel -q"
    else:
        status = _NVPMODEL_STATUS.search(_read(root / "var/lib/nvpmodel/status"))
        if status:
            facts["nvpmodel"] = f"mode {int(status.group(1))}"
            facts["nvpmodel_source"] = "/var/lib/nvpmodel/status"
    pinned = [c.get("min_mhz") == c.get("max_mhz") for c in clusters
              if "min_mhz" in c and "max_mhz" in c]
    if pinned:
        facts["jetson_clocks"] = all(pinned)
    return facts


def clock_state(root: Path = Path("/"), runner: Optional[Runner] = None,
                cpus: Optional[Set[int]] = None) -> ClockState:
    """The clock policy now: every cluster, the governor of those ``cpus`` run on (this
    process's CPUs by default), and on a Jetson its power mode."""
    clusters = [_cluster(c, folder) for c, folder in cluster_folders(root)]
    state: ClockState = {"governor": governor_of(clusters, _running_cpus() if cpus is None
                                                 else cpus),
                         "clusters": clusters}
    jetson = jetson_clocks(root, runner, clusters)
    if jetson is not None:
        state["jetson"] = jetson
    return state


def governor_condition(states: Sequence[ClockState]) -> str:
    """The verdict's named condition when the clusters that ran were not on the
    ``performance`` governor, or "" (also when cpufreq is not exposed: nothing to say)."""
    names = [s.get("governor", NOT_EXPOSED) for s in states]
    for name in names:
        if name not in (STEADY_GOVERNOR, NOT_EXPOSED, ""):
            return (f"governor {name}: figures depend on the load the governor sees; "
                    f"set {STEADY_GOVERNOR} for stable figures")
    return ""


def clock_summary(state: ClockState) -> str:
    """``state`` in one line, as ``edge doctor`` and the paired gate say it: the governor,
    each cluster's governor and clock (the current one where it is below the most), and a
    Jetson's power mode: ``mixed (CPUs 0-3 schedutil at 408 of 1800 MHz, CPUs 4-5
    performance up to 2400 MHz); nvpmodel MAXN; jetson_clocks applied``."""
    clusters = []
    for cluster in state.get("clusters", []):
        text = f"CPUs {cpu_range(cluster.get('cpus', []))} {cluster.get('governor', '?')}"
        if "max_mhz" in cluster:
            cur = cluster.get("cur_mhz")
            text += (f" at {cur:.0f} of {cluster['max_mhz']:.0f} MHz"
                     if cur is not None and cur < cluster["max_mhz"]
                     else f" up to {cluster['max_mhz']:.0f} MHz")
        clusters.append(text)
    summary = state.get("governor", NOT_EXPOSED) + (f" ({', '.join(clusters)})"
                                                    if clusters else "")
    jetson = state.get("jetson", {})
    if "nvpmodel" in jetson:
        summary += f"; nvpmodel {jetson['nvpmodel']}"
    if "jetson_clocks" in jetson:
        summary += f"; jetson_clocks {'applied' if jetson['jetson_clocks'] else 'not applied'}"
    return summary


class GovernorChange:
    """Setting every cluster's governor for a job (the ``set_governor`` setting), and
    putting back what each said before.

    ``previous`` holds each ``scaling_governor`` file written and what it said before, as
    soon as it is written (an interrupt part-way still restores it); ``failure`` says why
    the governor could not be set everywhere ("" when it was).

    Example::

        change = GovernorChange("performance")
        try:
            change.apply()
            ...                      # the job
        finally:
            change.restore()
    """

    def __init__(self, asked: str, root: Path = Path("/")) -> None:
        self.asked, self.root = asked, root
        self.previous: Dict[Path, str] = {}
        self.failure = ""

    def apply(self) -> None:
        """Write ``asked`` where this user may; never raises: what could not be set is in
        :attr:`failure`, which never fails the job."""
        clusters = cluster_folders(self.root)
        if not clusters:
            self.failure = "cpufreq is not exposed on this board"
            return
        refused = []
        for cpus, folder in clusters:
            path = folder / "scaling_governor"
            before = _read(path)
            if before == self.asked:
                continue
            offered = _read(folder / "scaling_available_governors").split()
            if offered and self.asked not in offered:
                refused.append(f"CPUs {cpu_range(cpus)}: not one of its governors "
                               f"({' '.join(offered)})")
                continue
            try:
                path.write_text(self.asked + "\n")
            except OSError as exc:
                refused.append(f"CPUs {cpu_range(cpus)}: {exc.strerror or exc}")
                continue
            self.previous[path] = before
            now = _read(path)
            if now != self.asked:  # the kernel took the write but kept another governor
                refused.append(f"CPUs {cpu_range(cpus)}: the kernel kept {now or 'none'}")
        if refused:
            self.failure = "scaling_governor not written for " + "; ".join(refused)

    def restore(self) -> None:
        """Write back every governor changed; a file that refuses now is left as it is
        (the job is over either way, and the next job's clock facts will say)."""
        while self.previous:
            path, governor = self.previous.popitem()
            try:
                path.write_text(governor + "\n")
            except OSError:
                continue

    @property
    def condition(self) -> str:
        """The named condition each variant carries when the governor was not set."""
        return (f"set_governor {self.asked} not applied: {self.failure}; figures are on the "
                "board's own governor") if self.failure else ""


def cpu_range(cpus: List[int]) -> str:
    """``[0, 1, 2, 3]`` -> ``0-3``; a list with gaps is named CPU by CPU."""
    if len(cpus) > 1 and cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(str(cpu) for cpu in cpus)
