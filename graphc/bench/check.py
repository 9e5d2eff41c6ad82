"""The correctness guard: graphc must compute what the reference computes before it is timed.

Training: both run two steps from the same weights on the same batch. The two losses must
agree to LOSS_RTOL (the first checks the forward pass; the second, taken after one update,
checks backward and the optimizer too), and so must every parameter's first update. The
updates are compared as whole tensors, relative to the reference update's norm, because
p1 - p0 loses float32 digits to cancellation (a parameter of 0.1 moved by 1e-5 keeps only
about three significant digits of the move) while a wrong gradient is off by order one.

A deep network amplifies float32 rounding: at initialisation a ResNet's BatchNorm weight
gradients computed by PyTorch itself in float32 are 0.05-0.1% away from the float64 answer,
and two float32 programs that sum in different orders can differ by a percent. So when an
`exact` (float64) run of the reference is given, each difference is measured against it
instead, and graphc passes where it is within the tolerance or within NOISE times the
reference's own float32 error: as accurate as PyTorch, not equal to PyTorch's rounding.

Inference: the logits must agree to OUTPUT_RTOL of their magnitude.
"""

from __future__ import annotations

import math

import numpy as np

from graphc.bench.contenders import Contender

LOSS_RTOL = 1e-4
UPDATE_RTOL = 1e-2
OUTPUT_RTOL = 1e-4
NOISE = 5.0  # times the reference's own float32 error that graphc's may be (with `exact`)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def check_training(
    subject: Contender, reference: Contender, initial: dict, exact: Contender | None = None
) -> dict:
    ref = _two_steps(reference, initial)
    sub = _two_steps(subject, initial)
    ex = _two_steps(exact, initial) if exact is not None else None
    problems = []

    def judge(what: str, s, r, e, tol: float, rel) -> float:
        """The subject's error (vs the exact answer if there is one, else vs the
        reference), recorded as a problem when above what is allowed."""
        if e is None:
            err, allowed, against = rel(s, r), tol, reference.name
        else:
            err, allowed = rel(s, e), max(tol, NOISE * rel(r, e))
            against = f"{exact.name} ({reference.name}'s own: {rel(r, e):.2e})"
        if not (err <= allowed):  # written so that NaN fails
            problems.append(f"{what} differs by {err:.2e} from {against} (> {allowed:.2e})")
        return err

    loss_rel = [_rel(s, r) for s, r in zip(sub["losses"], ref["losses"], strict=True)]
    for i, (s, r) in enumerate(zip(sub["losses"], ref["losses"], strict=True)):
        e = ex["losses"][i] if ex is not None else None
        judge(f"step {i + 1} loss {s!r}", s, r, e, LOSS_RTOL, _rel)
    update_rel: dict[str, float] = {}
    for name, r_delta in ref["updates"].items():
        s_delta = sub["updates"].get(name)
        if s_delta is None or s_delta.shape != r_delta.shape:
            problems.append(f"parameter {name} missing or mis-shaped in {subject.name}")
            continue
        update_rel[name] = _norm_rel(s_delta, r_delta)
        e_delta = ex["updates"][name] if ex is not None else None
        judge(f"first update of {name}", s_delta, r_delta, e_delta, UPDATE_RTOL, _norm_rel)
    # NaN sorts above everything: it is the worst
    worst = max(update_rel, key=lambda k: (math.isnan(update_rel[k]), update_rel[k]), default="")
    return {
        "reference": reference.name,
        "subject": subject.name,
        "exact": exact.name if exact is not None else None,
        "losses": {subject.name: sub["losses"], reference.name: ref["losses"]},
        "loss_rel_diff": loss_rel,
        "worst_update_rel_diff": update_rel.get(worst, 0.0),
        "worst_update_param": worst,
        "loss_rtol": LOSS_RTOL,
        "update_rtol": UPDATE_RTOL,
        "passed": not problems,
        "problems": problems,
    }


def _norm_rel(a: np.ndarray, b: np.ndarray) -> float:
    diff, norm = float(np.linalg.norm(a - b)), float(np.linalg.norm(b))
    return 0.0 if diff == 0 else diff / max(norm, 1e-30)


def _two_steps(c: Contender, initial: dict) -> dict:
    l1 = float(c.run())
    p1 = c.parameters()
    l2 = float(c.run())
    updates = {k: p1[k].astype(np.float64) - initial[k] for k in initial if k in p1}
    return {"losses": [l1, l2], "updates": updates}


def check_inference(subject: Contender, reference: Contender) -> dict:
    ref = np.asarray(reference.run(), np.float64)
    sub = np.asarray(subject.run(), np.float64)
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(sub - ref).max()) / scale if sub.shape == ref.shape else math.inf
    problems = []
    if not (err <= OUTPUT_RTOL):
        problems.append(
            f"logits differ by {err:.2e} of their largest magnitude (> {OUTPUT_RTOL:g})"
        )
    return {
        "reference": reference.name,
        "subject": subject.name,
        "output_rel_diff": err,
        "output_rtol": OUTPUT_RTOL,
        "passed": not problems,
        "problems": problems,
    }
