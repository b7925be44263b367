"""The README's opening example, run exactly as it is written there."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def first_python_block() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "README.md: no python example"
    return match.group(1)


def test_the_readme_example_grows_a_network_as_it_says():
    code = first_python_block()
    assert len([line for line in code.splitlines() if line.strip()]) <= 14
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    kinds = [e.kind for e in result.events]
    assert kinds == ["neurons", "layer", "layer"]  # what the README says it prints
    line = out.getvalue().split()
    assert line[:2] == ["64-18-18-18-10", "relu"], line
    # the same architecture and events everywhere; the accuracy's later digits follow the CPU's
    # float kernels (0.9487 and 0.9555 on two machines), as the README says
    assert 0.94 <= result.final["test_accuracy"] <= 0.96
