"""The README's promises point at tests that exist."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_every_bad_input_row_names_an_existing_test():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## What bad input gets", 1)[1].split("\n## ", 1)[0]
    refs = re.findall(r"`(test_\w+)(?:::(test_\w+))?`", section)
    assert len(refs) >= 25
    for module, test in refs:
        source = (REPO / "tests" / f"{module}.py").read_text()
        if test:
            assert re.search(rf"^def {test}\(", source, re.MULTILINE), f"{module}::{test}"
