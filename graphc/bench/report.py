"""The result of `graphc bench`: its JSON layout (below) and the human table.

JSON (schema "graphc-bench/1"; times in the unit their key names; null where not measured):
{
  "schema", "graphc_version", "started" (UTC, ISO 8601),
  "host": {"cpu", "cores", "python", "torch", "load_average_start", "load_average_end"},
  "config": BenchConfig's fields (threads, backend, steps, rounds, warmup, ...),
  "peak": {"gflops" (best sgemm repetition), "median_gflops", "sgemm_n", "repeats": of the
           best of the measurements made before each workload and at the end: "runs"},
  "notes": [...] (e.g. the machine was busy),
  "workloads": [{
    "kind": "train" | "inference", "model", "batch_size", "input_shape", "num_classes",
    "parameters", "optimizer" (text), "threads", "backend", "initialisation",
    "flops": {"dense" (conv/linear contractions: the basis of GFLOP/s), "full" (every op with
              a flops rule), "anchor_dense" (anchors.md's count, when it has one), "basis"},
    "check": the correctness check (check.py): reference, exact (the float64 run measured
             against, or null), losses, relative differences, passed,
    "contenders": {NAME: {                         NAME: graphc | torch-eager | torch-compile
        "median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms"     over every timed call,
        "round_medians_ms", "round_median_range_ms", "timed_calls",
        "images_per_s"                             batch_size / median,
        "ratio_vs_torch_eager"                     torch-eager median_ms / this median_ms
                                                   (> 1: faster than eager),
        "round_ratio_range"                        [min, max] of the same ratio per round,
        "gflops", "pct_of_peak"                    dense FLOPs / median, and / peak.gflops,
        "first_call_in_timing_process_s",
        "first_loss", "final_loss"                 training only; same step count for all,
        "startup": {"cold": PROBE, "warm": PROBE}  training only, unless --no-startup;
             PROBE: {"first_call_s"                the step's first call (compile included),
                     "start_to_first_step_s"       from the parent starting the process to
                                                   the first step's return (interpreter start,
                                                   imports, model, compile, first step),
                     "setup_s", "steps", "peak_rss_mb" (VmHWM of the process after its run),
                     "max_rss_process_tree_mb" (largest process incl. reaped descendants),
                     "compile": graphc's compile timings}
        "peak_rss_mb"                              the cold probe's (compile included)
    }},
    "dropped": {NAME: why it was left out}, "notes": [...]
  }]
}
"""

from __future__ import annotations

from graphc.bench.config import GRAPHC, TORCH_COMPILE, TORCH_EAGER, Workload
from graphc.bench.timing import round_ratios, summarize

SCHEMA = "graphc-bench/1"
ORDER = (GRAPHC, TORCH_EAGER, TORCH_COMPILE)
DRIFT_RTOL = 1e-2  # final losses after hundreds of identical steps: fp32 drift only


def workload_result(w: Workload, prep: dict, startup: dict, timing: dict, peak: float) -> dict:
    timed = timing["contenders"]
    eager = timed.get(TORCH_EAGER)
    eager_ms = summarize(eager["rounds_ns"])["median_ms"] if eager else None
    dense = prep["flops"]["dense"]
    contenders = {}
    for name in (n for n in ORDER if n in timed):
        t = timed[name]
        s = summarize(t["rounds_ns"])
        seconds = s["median_ms"] / 1e3
        ratios = round_ratios(eager["rounds_ns"], t["rounds_ns"]) if eager else None
        probes = startup.get(name)
        cold = (probes or {}).get("cold") or {}
        contenders[name] = {
            **s,
            "images_per_s": w.batch_size / seconds,
            "ratio_vs_torch_eager": eager_ms / s["median_ms"] if eager else None,
            "round_ratio_range": [min(ratios), max(ratios)] if ratios else None,
            "gflops": dense / seconds / 1e9,
            "pct_of_peak": 100 * dense / seconds / 1e9 / peak,
            "first_call_in_timing_process_s": t["first_call_s"],
            "first_loss": t["first_loss"],
            "final_loss": t["final_loss"],
            "startup": probes,
            "peak_rss_mb": cold.get("peak_rss_mb"),
        }
    notes = list(prep["notes"])
    anchor = prep["flops"].get("anchor_dense")
    if anchor is not None and anchor != dense:
        notes.append(
            f"graphc's graph does {dense:,} dense FLOPs per step where anchors.md counts "
            f"{anchor:,}: extra or missing contractions (e.g. an unneeded input gradient)"
        )
    warm = ((startup.get(GRAPHC) or {}).get("warm") or {}).get("compile", {})
    if warm.get("backend", {}).get("cache") == "miss":
        notes.append(
            "graphc's warm start missed the compile cache the cold start filled (did graphc's "
            "code change during the run?): its warm first call includes a compile"
        )
    g, e = contenders.get(GRAPHC), contenders.get(TORCH_EAGER)
    if w.kind == "train" and g and e and g["final_loss"] is not None and e["final_loss"]:
        drift = abs(g["final_loss"] - e["final_loss"]) / abs(e["final_loss"])
        if not drift <= DRIFT_RTOL:
            notes.append(
                f"final losses drifted apart: graphc {g['final_loss']:.6g} vs torch-eager "
                f"{e['final_loss']:.6g} after the same steps"
            )
    return {
        **w.to_json(),
        "optimizer": w.optimizer_text() if w.kind == "train" else None,
        "input_shape": prep["input_shape"],
        "num_classes": prep["num_classes"],
        "parameters": prep["parameters"],
        "initialisation": prep["initialisation"],
        "flops": {**prep["flops"], "basis": "dense"},
        "check": prep["check"],
        "contenders": contenders,
        "dropped": {
            **timing["dropped"],
            **{n: p["error"] for n, p in startup.items() if "error" in p},
        },
        "notes": notes,
    }


def rescale_peak(result: dict, peak: float) -> None:
    for c in result["contenders"].values():
        c["pct_of_peak"] = 100 * c["gflops"] / peak


# ---- the human table ------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s" if x < 10 else f"{x:.0f}s"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _mflop(x: int | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f} MFLOP"


def _compile_line(startup: dict) -> str | None:
    """graphc's compile inside its cold and warm first calls: the first call less the
    step's run, split as trace / the passes / the backend (lowering and LLVM)."""
    parts = []
    for phase in ("cold", "warm"):
        seconds = ((startup.get(phase) or {}).get("compile") or {}).get("graphc_seconds")
        if not seconds:
            continue
        total = sum(seconds.values())
        trace, backend = seconds.get("trace", 0.0), seconds.get("backend", 0.0)
        parts.append(
            f"{phase} {_s(total)} (trace {_s(trace)}, passes {_s(total - trace - backend)}, "
            f"backend {_s(backend)})"
        )
    return "  graphc compile: " + ", ".join(parts) if parts else None


def format_result(result: dict) -> str:
    cfg, peak = result["config"], result["peak"]
    lines = [
        f"graphc bench: {cfg['threads']} thread(s), graphc backend {cfg['backend']}, "
        f"{cfg['warmup']} warm-up + {cfg['rounds']} rounds x {cfg['steps']} calls per contender",
        f"peak: {peak['gflops']:.1f} GFLOP/s (numpy sgemm {peak['sgemm_n']}: best of "
        f"{len(peak['runs'])} measurements x {peak['repeats']} products; worst measurement "
        f"{min(r['gflops'] for r in peak['runs']):.1f})",
        f"load average {result['host']['load_average_start']} at the start, "
        f"{result['host']['load_average_end']} at the end",
    ]
    lines += [f"note: {n}" for n in result["notes"]]
    for w in result["workloads"]:
        lines += [""] + format_workload(w)
    return "\n".join(lines)


def format_workload(w: dict) -> list[str]:
    train = w["kind"] == "train"
    f = w["flops"]
    anchor = f" (anchors.md: {_mflop(f['anchor_dense'])})" if f.get("anchor_dense") else ""
    title = f"{w['model']} {'x'.join(map(str, w['input_shape']))}, batch {w['batch_size']}, "
    title += f"training step, {w['optimizer']}" if train else "inference (forward only)"
    chk = w["check"]
    if train:
        rel = max(chk["loss_rel_diff"])
        check = (
            f"check vs {chk['reference']}: losses of steps 1-2 within {rel:.1e} "
            f"(rtol {chk['loss_rtol']:g}), first updates within "
            f"{chk['worst_update_rel_diff']:.1e} of their norm"
        )
        if chk.get("exact"):
            check += f"; both measured against {chk['exact']}"
    else:
        check = f"check vs {chk['reference']}: logits within {chk['output_rel_diff']:.1e}"
    lines = [
        title,
        f"  per call: {_mflop(f['dense'])} dense (conv/linear, the GFLOP/s basis){anchor}, "
        f"{_mflop(f['full'])} all ops",
        f"  {check}",
    ]
    unit = "ms/step" if train else "ms/call"
    head = (
        f"  {'contender':<14}{unit:>9}{'IQR':>14}{'round medians':>15}{'img/s':>8}"
        f"{'vs eager':>9}{'per round':>12}{'GFLOP/s':>9}{'%peak':>7}"
    )
    if train:
        head += f"{'cold 1st':>10}{'warm 1st':>10}{'start->1st':>11}{'RSS MB c/w':>12}"
    else:
        head += f"{'1st call':>10}"
    lines.append(head)
    for name, c in w["contenders"].items():
        ratio = c["ratio_vs_torch_eager"]
        rr = c["round_ratio_range"]
        row = (
            f"  {name:<14}{_ms(c['median_ms']):>9}"
            f"{_ms(c['q1_ms']) + '-' + _ms(c['q3_ms']):>14}"
            f"{_ms(c['round_median_range_ms'][0]) + '-' + _ms(c['round_median_range_ms'][1]):>15}"
            f"{_k(c['images_per_s']):>8}"
            f"{_x(ratio):>9}"
            f"{'-' if rr is None else _x(rr[0]) + '-' + _x(rr[1]):>12}"
            f"{c['gflops']:>9.1f}{c['pct_of_peak']:>7.1f}"
        )
        if train:
            st = c["startup"] or {}
            cold, warm = st.get("cold") or {}, st.get("warm") or {}
            rss = "/".join(_mb(p.get("peak_rss_mb")) for p in (cold, warm))
            row += (
                f"{_s(cold.get('first_call_s')):>10}{_s(warm.get('first_call_s')):>10}"
                f"{_s(warm.get('start_to_first_step_s')):>11}{rss:>12}"
            )
        else:
            row += f"{_s(c['first_call_in_timing_process_s']):>10}"
        lines.append(row)
    compiled = _compile_line((w["contenders"].get(GRAPHC) or {}).get("startup") or {})
    if compiled:
        lines.append(compiled)
    for name, why in w["dropped"].items():
        lines.append(f"  {name}: left out: {why}")
    lines += [f"  note: {n}" for n in w["notes"]]
    return lines
