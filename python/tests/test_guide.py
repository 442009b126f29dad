"""The user guide's examples run (docs/guide/): every ``>>>`` example of every page as a
doctest, and every ``$ govshare ...`` line of a ``console`` block as a command whose output
must match the lines under it (``...`` matches anything, as in doctests)."""

import doctest
import os
import pathlib
import re
import subprocess

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guide"
PAGES = sorted(GUIDE.glob("*.md"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_the_guide_has_its_pages():
    names = {p.name for p in PAGES}
    assert {"README.md", "analyst.md", "auditor.md", "platform.md", "reference.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples(page, store):
    result = doctest.testfile(
        str(page),
        module_relative=False,
        globs={"demo_store": str(store["path"])},
        optionflags=FLAGS,
        verbose=False,
        report=True,
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name}"


def _console_examples(text):
    """(command, expected output) pairs of the ``console`` blocks."""
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command, expected = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    out.append((command, "\n".join(expected)))
                command, expected = line[2:], []
            elif command is not None:
                expected.append(line)
        if command is not None:
            out.append((command, "\n".join(expected)))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_command_line_examples(page, store, govshare_cli, tmp_path):
    examples = _console_examples(page.read_text(encoding="utf-8"))
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(govshare_cli).parent}{os.pathsep}{env['PATH']}"
    env["GOVSHARE_STORE"] = str(store["path"])
    checker = doctest.OutputChecker()
    for command, expected in examples:
        run = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert run.returncode == 0, f"{command}\n{run.stderr}"
        want = expected.strip() + "\n" if expected.strip() else ""
        got = run.stdout.strip() + "\n" if run.stdout.strip() else ""
        assert checker.check_output(want, got, FLAGS), f"{command}\nwant:\n{want}\ngot:\n{got}"
