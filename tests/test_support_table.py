"""The README's table of supported layers and functions is the one the code generates."""

from __future__ import annotations

from pathlib import Path

import graphc.nn as nn
from graphc import support

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_is_up_to_date():
    text = README.read_text()
    start, end = text.find(support.BEGIN), text.find(support.END)
    assert 0 <= start < end, "README.md lost its table markers"
    table = text[start : end + len(support.END)]
    assert table == support.render(), (
        "README.md's table of supported layers and functions is out of date: run "
        "`python -m graphc.support README.md`"
    )


def test_every_public_nn_class_has_a_row():
    listed = {name for _, names in support.rows() for name in names}
    classes = {n for n in nn.__all__ if isinstance(getattr(nn, n), type)}
    assert classes <= listed, sorted(classes - listed)


def test_table_names_what_this_work_added():
    listed = {name for _, names in support.rows() for name in names}
    for name in ("GELU", "PReLU", "BCEWithLogitsLoss", "KLDivLoss", "RMSprop", "Adadelta"):
        assert name in listed
    for name in ("gelu", "binary_cross_entropy_with_logits", "erf", "chunk", "split"):
        assert name in listed


def test_update_rewrites_only_the_table(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n{support.BEGIN}\nold\n{support.END}\n\nafter\n")
    assert support.update(path) is True
    text = path.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\nafter\n")
    assert support.render() in text
    assert support.update(path) is False  # idempotent
