"""No module of ``src/singexp`` grows past 600 lines unless its docstring says why it is one
concern (a sentence that starts "One concern, one module")."""

from __future__ import annotations

import ast

from test_imports import SRC

LIMIT = 600


def test_long_modules_say_why_they_are_one_concern() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "One concern, one module" not in docstring:
            unexplained.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"over {LIMIT} lines without a reason: {unexplained}"


def test_doc_tables_is_repository_tooling_not_in_the_package() -> None:
    assert not list(SRC.rglob("doc_tables.py"))
