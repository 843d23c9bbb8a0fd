"""Help of every subcommand: examples, a help text for every option, and no torch import for
``--help`` or a usage error (issue 8, item 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from mxbai_rerank.cli import _COMMANDS, main

OWN_COMMANDS = ["rank", "eval", "bench", "serve"]


def command(name: str) -> click.Command:
    found = main.get_command(click.Context(main), name)
    assert found is not None
    return found


@pytest.mark.parametrize("name", OWN_COMMANDS)
def test_every_option_has_a_help_text(name: str) -> None:
    missing = [
        param.opts[0]
        for param in command(name).params
        if isinstance(param, click.Option) and len((param.help or "").strip()) < 15
    ]
    assert missing == []


@pytest.mark.parametrize("name", OWN_COMMANDS)
def test_help_has_examples_and_the_family_option(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout and f"mxbai-rerank {name} " in result.stdout
    assert "--family [auto|mxbai-v1|mxbai-v2|mxbai-v2-seq-cls]" in result.stdout


def test_bench_json_option_says_what_it_writes() -> None:
    (option,) = [p for p in command("bench").params if isinstance(p, click.Option) and "--json" in p.opts]
    assert option.metavar == "OUT" and "OUT" in (option.help or "") and "JSON" in (option.help or "")


# Runs the command group, as the entry point does, for --help, --version, each subcommand's
# --help and usage errors, then reports whether torch or transformers were imported.
_PROBE = textwrap.dedent(
    """
    import json, sys

    from mxbai_rerank.cli import _COMMANDS, main

    calls = [["--help"], ["--version"], ["frobnicate"], ["rank", "--top-k", "0"], ["serve", "--port", "99999"]]
    calls += [[name, "--help"] for name in _COMMANDS]
    codes = []
    for args in calls:
        try:
            main(args, prog_name="mxbai-rerank")
        except SystemExit as exc:
            codes.append(exc.code)
    print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
    """
)


def test_help_and_usage_errors_do_not_import_torch() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["codes"] == [0, 0, 2, 2, 2] + [0] * len(_COMMANDS), done.stderr
    assert (report["torch"], report["transformers"]) == (False, False)
