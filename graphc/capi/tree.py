"""The structure record of a library's weights files: the "tree" in the safetensors
metadata that graphc.load decodes (serialization.py's encoding), as pieces the C runtime
joins when it saves: fixed text, the optimizer entries present then, and each group's
learning rate then. The pieces are escaped, ready to sit inside a JSON string."""

from __future__ import annotations

import json

from graphc.capi.layout import INFERENCE, OptimizerEntry, Stored


def escaped(text: str) -> str:
    """`text` as the inside of a JSON string (the record is JSON inside JSON)."""
    return json.dumps(text)[1:-1]


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


STATE_EMPTY = escaped('{"$map":{}}')  # an optimizer state_dict's "state" with no entry
STATE_OPEN = escaped('{"$dict":[')  # ... with some: [index, {key: tensor}] pairs
STATE_CLOSE = escaped("]}")


def tree(
    kind: str,
    model_names: list[str],
    tensors: list[Stored],
    entries: list[OptimizerEntry],
    optimizer,
    rng: int | None,
) -> tuple[list[tuple[str, str | int]], list[str]]:
    """(pieces, each entry's fragment). A piece is ("text", escaped JSON), ("state", 0) for
    the present entries, or ("lr", group). An inference library saves the model's
    state_dict itself; a training one {"model": ..., "optimizer": ...[, "rng": ...]}."""
    model = {"$map": {k: {"$tensor": k} for k in model_names}}
    if kind == INFERENCE or optimizer is None:
        return [("text", escaped(compact(model)))], []
    from graphc.capi.optimizer import param_index
    from graphc.serialization import _encode

    fragments = []
    for e in entries:
        state = {k: {"$tensor": tensors[e.first + i].name} for i, k in enumerate(e.keys)}
        fragments.append(escaped(compact([e.index, {"$map": state}])))
    head = '{"$map":{"model":' + compact(model) + ',"optimizer":{"$map":{"state":'
    pieces: list[tuple[str, str | int]] = [("text", escaped(head)), ("state", 0)]
    pieces.append(("text", escaped(',"param_groups":[')))
    index = param_index(optimizer)
    marker = "\x00lr\x00"
    for g, group in enumerate(optimizer.param_groups):
        fields = {k: v for k, v in group.items() if k != "params"}
        fields["lr"] = marker
        fields["params"] = [index[id(p)] for p in group["params"]]
        before, after = compact(_encode(fields, "", [], set())).split(compact(marker))
        pieces.append(("text", escaped(("," if g else "") + before)))
        pieces += [("lr", g), ("text", escaped(after))]
    tail = "]}}"
    if rng is not None:
        tail += ',"rng":{"$ndarray":"rng"}'
    pieces.append(("text", escaped(tail + "}}")))
    return pieces, fragments
