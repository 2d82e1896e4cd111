"""The repository stands alone: no file reads, runs or links anything beside it.

Users have only the repository, so a path that climbs out of it (`../x` from the root,
`ROOT.parent / ...`) works on the author's machine and nowhere else.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELATIVE = re.compile(r"(?<![\w./])((?:\.\./)+)([\w./-]*)")
CLIMBS_IN_CODE = re.compile(r"\bROOT\.parent\b|\.parent\s*/\s*['\"]shared['\"]")
SKIPPED = {"uv.lock", "LICENSE", Path(__file__).name}  # this file names the patterns


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if path.name in SKIPPED or not path.is_file():
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def outside_references(path: Path, text: str) -> list[str]:
    """Each `../` path in `text` that resolves outside ROOT, and code that climbs out."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in RELATIVE.finditer(line):
            target = (path.parent / match.group(1) / match.group(2)).resolve()
            if not target.is_relative_to(ROOT):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
        if path.suffix == ".py" and CLIMBS_IN_CODE.search(line):
            found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_check_sees_a_link_out_of_the_repository() -> None:
    readme = ROOT / "README.md"
    assert outside_references(readme, "see [x](../beside/NOTES.md)") == [
        "README.md:1: ../beside/NOTES.md"
    ]
    assert outside_references(ROOT / "docs" / "a.md", "[ok](../README.md)") == []
    assert outside_references(ROOT / "bench" / "x.py", 'p = ROOT.parent / "beside"') != []


def test_no_tracked_file_refers_to_a_folder_outside_the_repository() -> None:
    files = _tracked_text_files()
    assert len(files) > 50
    offenders = [ref for path in files for ref in outside_references(path, path.read_text())]
    assert offenders == []
