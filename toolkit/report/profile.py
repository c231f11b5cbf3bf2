"""The per-operator profile in the report: where each variant's time goes, and why int8 is slower.

For each variant profiled on the board (``edge deploy --profile``) the report shows the
heaviest operators as bars and a table by op type, with what profiling cost (the
profiled pass's total against the unprofiled p50, which stays the latency figure).
For a quantized variant beside fp32 on one board it shows both per op type, side by
side, and names the op types that are slower quantized: the answer to "int8 is slower
than fp32 on this board, which operator is to blame?".  Where both variants ran the
same operator sequence, the layers are compared one by one too.

Example::

    sections = profile_sections(run)      # one per profiled target x variant
    comparisons = profile_comparisons(run)  # fp32 vs each quantized variant, per target
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from toolkit.report import svgplot
from toolkit.results.facts import Profile, ProfileRow
from toolkit.results.record import ResultRecord
from toolkit.results.store import StoredRun
from toolkit.units import format_duration

#: Operators drawn per variant (the rest are in the table by op type).
TOP_OPS = 10
#: Layers listed in the per-layer comparison.
TOP_LAYERS = 10
#: A quantized op type counts as slower above this ratio to fp32 and by at least this share
#: of fp32's operator time: below either, the difference is the profiler's noise.
SLOWER_RATIO, SLOWER_SHARE = 1.05, 0.01
#: Operators whose p50 and mean both differ by less than this share are a tie:
#: MobileNetV2-96's two 1x1 convolutions of the same cost came 1 us apart (0.4 %) in
#: either order from one profile to the next.
TIE_SHARE = 0.02
#: XNNPACK's and ONNX Runtime's timings are whole microseconds: a p50 below this says nothing
#: of an operator.
RESOLUTION_US = 1.0


@dataclass(frozen=True)
class ProfileSection:
    """One profiled target x variant, formatted; ``error`` set when there is no profile."""

    target: str
    variant: str
    error: str = ""
    summary: str = ""
    by_type: tuple[dict[str, str], ...] = ()
    top: tuple[dict[str, str], ...] = ()
    svg: str = ""
    plot_id: str = ""
    #: Whether any operator row names its model node (the column is left out otherwise).
    has_node: bool = False
    #: Whether any operator row names the execution provider that ran it (ONNX Runtime).
    has_provider: bool = False
    #: The figure the heaviest operators are drawn and shared by: ``p50`` or ``mean``.
    statistic: str = "p50"


@dataclass(frozen=True)
class ProfileComparison:
    """fp32 against one quantized variant on one target, per op type and per layer."""

    target: str
    variant: str
    by_type: tuple[dict[str, str], ...]
    layers: tuple[dict[str, str], ...]
    slower: str
    svg: str
    plot_id: str

    @property
    def has_node(self) -> bool:
        """Whether any compared layer names its model node (the column is left out otherwise)."""
        return any(layer["node"] for layer in self.layers)


def profile_sections(run: StoredRun) -> list[ProfileSection]:
    """A section per measured result that carries a profile, in the run's order."""
    sections = []
    for result in run.results:
        profile = result.profile
        if not result.ok or profile is None:
            continue
        if "error" in profile:
            sections.append(ProfileSection(result.target, result.variant,
                                           error=str(profile["error"])))
            continue
        plot_id = f"plot-profile-{_slug(result.target)}-{_slug(result.variant)}"
        top = heaviest(profile)[:TOP_OPS]
        # Ranked, drawn and shared by one figure: bars drawn by the mean under a ranking by
        # p50 put a stalled operator's long bar below shorter ones.
        statistic = _statistic(profile)
        totals = profile.get("total_us", {})
        total = float(totals.get("p50", 0.0) if statistic == "p50" else totals.get("mean", 0.0))
        bars = [svgplot.BarRow(_op_label(row), [(_figure(row, statistic),
                                                 f"{_us(_figure(row, statistic))} "
                                                 f"({_share_of(row, statistic, total)})")],
                               key=f"{result.target}/{result.variant}") for row in top]
        svg = svgplot.bar_plot(
            f"Heaviest operators of {result.variant} on {result.target} ({statistic} per run)",
            bars, plot_id=plot_id, axis=f"time per run, {statistic} (us)",
            label=lambda v: f"{v:g}")
        rows = tuple({"index": str(row.get("index", "")), "op": str(row["op"]),
                      "kernel": str(row.get("kernel", "")),
                      "provider": str(row.get("provider", "")), "node": _node(row),
                      "p50": _us(_p50(row)), "time": _us(row["mean_us"]),
                      "share": _share_of(row, statistic, total)} for row in top)
        sections.append(ProfileSection(
            result.target, result.variant, summary=profile_summary(result, profile),
            by_type=tuple({"op": str(entry["op"]), "count": str(entry.get("count", "")),
                           "time": _us(entry["mean_us"]), "share": _share(entry)}
                          for entry in profile.get("by_type", [])),
            top=rows, svg=svg, plot_id=plot_id, has_node=any(row["node"] for row in rows),
            has_provider=any(row["provider"] for row in rows), statistic=statistic))
    return sections


def with_node_names(profile: Profile, model_path: Path) -> Profile:
    """``profile`` with each row that names a model node given that node's output tensor
    name (``node_name``), read from ``model_path`` by the host's interpreter: the board
    sends node indices only, and a name says which layer of the user's model it is.

    A file the host cannot read leaves the profile as it was: the names are an extra.
    """
    ops = profile.get("ops")
    if not ops or not any("node" in row for row in ops) \
            or profile.get("runtime", {}).get("name") == "onnxruntime":
        return profile  # ONNX Runtime's rows carry the node's own name (``kernel``) already
    from device_agent.interp import Interpreter
    from device_agent.runtime import find_runtime

    try:
        # A profile with nodes is a TFLite one: find_runtime() is a TFLite runtime here.
        interpreter = cast(Interpreter,
                           find_runtime().interpreter_class(model_path=str(model_path)))
        tensors = {int(t["index"]): str(t["name"]) for t in interpreter.get_tensor_details()}
        names = {int(op["index"]): tensors[int(op["outputs"][0])]
                 for op in interpreter._get_ops_details()
                 if len(op["outputs"]) and int(op["outputs"][0]) in tensors}
    except Exception:  # noqa: BLE001 - any runtime's refusal means "no names", never a failed run
        return profile
    named: list[ProfileRow] = [{**row, "node_name": names[row["node"]]}
                               if row.get("node") in names else row for row in ops]
    return {**profile, "ops": named}


def heaviest(profile: Profile) -> list[ProfileRow]:
    """The profile's rows, heaviest first: by p50 (robust to a shared machine's stalls),
    then by mean (XNNPACK's whole microseconds tie small operators' p50; their mean over
    the profiled runs still tells them apart).

    Operators within :data:`TIE_SHARE` of the heaviest of their group in both p50 and mean
    keep run order among themselves: ranking them by a difference the profile cannot
    resolve would reorder them from one profile to the next.
    """
    def times(row: ProfileRow) -> tuple[float, float]:
        return _p50(row), float(row["mean_us"])

    def tie(first: ProfileRow, other: ProfileRow) -> bool:
        return all(abs(a - b) <= TIE_SHARE * max(a, b)
                   for a, b in zip(times(first), times(other), strict=True))

    def run_order(row: ProfileRow) -> int:
        return int(row.get("index", 0))

    ranked: list[ProfileRow] = []
    tied: list[ProfileRow] = []
    for row in sorted(profile.get("ops", []), key=lambda row: tuple(-t for t in times(row))):
        if tied and not tie(tied[0], row):
            ranked += sorted(tied, key=run_order)
            tied = []
        tied.append(row)
    return ranked + sorted(tied, key=run_order)


def profile_summary(result: ResultRecord, profile: Profile) -> str:
    """One sentence: how it was profiled, the total under the profiler, and what that cost."""
    total = profile.get("total_us", {})
    text = (f"{profile.get('method', 'profiled')}, {profile.get('runs', '?')} runs: "
            f"{_us(total.get('p50', 0))} per run under the profiler (p50)")
    overhead = profile.get("overhead")
    if isinstance(overhead, (int, float)) and result.p50_ms is not None:
        # The passes run one after the other: a machine that sped up in between makes the
        # profiled pass faster, and a negative cost would read as profiling speeding it up.
        cost = (f"{overhead:+.0%}" if overhead >= 0 else
                "less than the machine's drift between the two passes (the profiled pass "
                f"ran {-overhead:.0%} faster)")
        text += f", against {format_duration(result.p50_ms)} unprofiled: profiling cost {cost}"
    coverage = profile.get("coverage")
    if isinstance(coverage, (int, float)):
        text += (f"; the operators account for {coverage:.0%} of the profiled run (the rest is "
                 "the interpreter and the profiler's own bookkeeping between operators)")
    return text + "."


def profile_comparisons(run: StoredRun) -> list[ProfileComparison]:
    """fp32 against each profiled quantized variant (``int8`` in its recipe) per target."""
    profiled = {(r.target, r.variant): r for r in run.results
                if r.ok and r.profile is not None and "error" not in r.profile}
    comparisons = []
    for (target, variant), quantized in profiled.items():
        reference = profiled.get((target, "fp32"))
        if reference is None or "int8" not in quantized.recipe:
            continue
        comparisons.append(_compare(target, variant, reference.profile or Profile(),
                                    quantized.profile or Profile()))
    return comparisons


def _by_node_type(profile: Profile) -> dict[str, float]:
    """Mean time per run by op type, typed by the TFLite node where a row names one.

    Two variants' rows may come from different kernels (XNNPACK's operators for fp32, the
    interpreter's own nodes for int8 on tflite-runtime 2.14): the node's op is the name
    both share, XNNPACK's operator family the fallback where no node is known.
    """
    totals: dict[str, float] = {}
    for row in profile.get("ops", []):
        key = str(row.get("node_op") or row["op"])
        totals[key] = totals.get(key, 0.0) + float(row["mean_us"])
    return totals


def _compare(target: str, variant: str, fp32: Profile,
             quantized: Profile) -> ProfileComparison:
    before, after = _by_node_type(fp32), _by_node_type(quantized)
    types = sorted(set(before) | set(after), key=lambda op: -max(before.get(op, 0.0),
                                                                  after.get(op, 0.0)))
    floor = SLOWER_SHARE * float(fp32.get("ops_sum_us", 0.0))
    rows, slower = [], []
    for op in types:
        a, b = before.get(op), after.get(op)
        ratio = b / a if a and b is not None else None
        worse = a is not None and b is not None and ratio is not None \
            and ratio > SLOWER_RATIO and b - a >= floor
        if worse and a is not None and b is not None:
            slower.append((b - a, f"{op} ({ratio:.2f}x, {_us(b - a, sign=True)} per run)"))
        rows.append({"op": op, "fp32": _us(a) if a is not None else "",
                     "quantized": _us(b) if b is not None else "",
                     "ratio": f"{ratio:.2f}x" if ratio is not None else "",
                     "slower": "yes" if worse else ""})
    slower.sort(reverse=True)
    sentence = (f"{variant} is slower than fp32 in: " + "; ".join(text for _d, text in slower)
                if slower else f"no op type is slower in {variant} than in fp32")
    if not set(before) & set(after):
        sentence = (f"not comparable per op type: fp32 and {variant} ran different kernels "
                    "whose operators could not be matched to the model's nodes")
    plot_id = f"plot-profile-compare-{_slug(target)}-{_slug(variant)}"
    bars = [svgplot.BarRow(op, [(before.get(op, 0.0), _us(before.get(op, 0.0))),
                                (after.get(op, 0.0), _us(after.get(op, 0.0)))], key=op)
            for op in types[:TOP_OPS]]
    svg = svgplot.bar_plot(f"fp32 against {variant} per op type on {target} (mean per run)",
                           bars, plot_id=plot_id, axis="time per run (us)",
                           label=lambda v: f"{v:g}", legend=[(0, "fp32"), (1, variant)])
    return ProfileComparison(target, variant, tuple(rows), _layers(fp32, quantized),
                             sentence, svg, plot_id)


def _layers(fp32: Profile, quantized: Profile) -> tuple[dict[str, str], ...]:
    """Layer by layer, where both variants ran the same operator sequence: the layers
    that lost most in the quantized variant first (none when the sequences differ)."""
    a, b = list(fp32.get("ops", [])), list(quantized.get("ops", []))
    if not a or len(a) != len(b) or any(x["op"] != y["op"] for x, y in zip(a, b, strict=True)):
        return ()
    pairs = sorted(zip(a, b, strict=True), key=lambda pair: float(pair[0]["mean_us"])
                   - float(pair[1]["mean_us"]))
    return tuple({"index": str(x.get("index", "")), "op": str(x["op"]), "node": _node(y),
                  "fp32": _us(x["mean_us"]), "quantized": _us(y["mean_us"]),
                  "ratio": (f"{float(y['mean_us']) / float(x['mean_us']):.2f}x"
                            if float(x["mean_us"]) > 0 else "")}
                 for x, y in pairs[:TOP_LAYERS])


def _op_label(row: ProfileRow) -> str:
    node = f" {row['node_op']}" if row.get("node_op") and row["node_op"] != row["op"] else ""
    return f"#{row.get('index', '?')} {row['op']}{node}"


def _node(row: ProfileRow) -> str:
    """``node 3 CONV_2D v3 -> 1x8x8x32 model/conv2/Relu``, as far as the profile knows it
    (the output tensor's name when the host read it from the file)."""
    if row.get("node") is None:
        return ""
    text = f"node {row['node']} {row.get('node_op', row['op'])}"
    if row.get("version") is not None:
        text += f" v{row['version']}"
    if row.get("output_shape"):
        text += " -> " + "x".join(str(d) for d in row["output_shape"])
    if row.get("node_name"):
        text += f" {row['node_name']}"
    return text


def _p50(row: ProfileRow) -> float:
    """The operator's p50 per run (us); its mean where an older profile has no p50."""
    return float(row.get("p50_us", row["mean_us"]))


def _statistic(profile: Profile) -> str:
    """``p50``, the figure :func:`heaviest` ranks by; ``mean`` when no operator's p50
    reaches the profiler's resolution (XNNPACK's whole microseconds: a model whose
    operators all take under 1 us has every p50 at 0, and heaviest() ranks by the mean)."""
    resolved = any(_p50(row) >= RESOLUTION_US for row in profile.get("ops", []))
    return "p50" if resolved else "mean"


def _figure(row: ProfileRow, statistic: str) -> float:
    return _p50(row) if statistic == "p50" else float(row["mean_us"])


def _share_of(row: ProfileRow, statistic: str, total: float) -> str:
    """The operator's figure as a share of the profiled run's total in the same statistic."""
    return f"{_figure(row, statistic) / total:.1%}" if total > 0 else ""


def _us(value: float, *, sign: bool = False) -> str:
    text = format_duration(float(value) / 1e3) if float(value) else "0 us"
    return ("+" + text if sign and float(value) >= 0 else text)


def _share(row: ProfileRow) -> str:
    share = row.get("share")
    return f"{float(share):.1%}" if isinstance(share, (int, float)) else ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)
