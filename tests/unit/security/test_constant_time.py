"""Secrets, signatures and keys are compared only with hmac.compare_digest."""

from __future__ import annotations

import ast
from pathlib import Path

PROCESSOR = Path(__file__).resolve().parents[3] / "processor"
SENSITIVE = ("signature", "secret", "token", "digest", "expected", "presented", "api_key")


def _names(node: ast.AST) -> list[str]:
    return [
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Name | ast.Attribute)
    ]


def test_no_sensitive_value_is_compared_with_equality() -> None:
    found = []
    for path in PROCESSOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            # comparing a setting's *kind* (encoding == "hex") is fine; values are not
            if any(isinstance(side, ast.Constant) for side in sides):
                continue
            names = [n.lower() for side in sides for n in _names(side)]
            if any(word in name for name in names for word in SENSITIVE):
                found.append(f"{path.relative_to(PROCESSOR)}:{node.lineno}")
    assert found == []


def test_signature_and_key_checks_use_compare_digest() -> None:
    for module in ("language/signatures.py", "http/auth.py"):
        assert "hmac.compare_digest" in (PROCESSOR / module).read_text(), module
