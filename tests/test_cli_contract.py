"""One CLI contract: every console script builds its parser without torch or fairseq, spells each shared concept
one way, and is documented in docs/cli.md with every flag it shows."""

import argparse
import importlib
import json
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {ep.name: ep.value.split(":")[0] for ep in distribution("fairseq-esm").entry_points
           if ep.group == "console_scripts"}
#: spellings that have one accepted form (the value) across every tool; the old ones may only stay hidden
SECOND_SPELLINGS = {
    "--toks-per-batch": "--max-tokens", "--toks_per_batch": "--max-tokens", "--batch-sequences": "--batch-size",
    "--out-dir": "--out", "--output-dir": "--out", "--outdir": "--out", "--layer": "--repr-layers",
    "--repr_layers": "--repr-layers", "--mutant-column": "--mutation-col", "--score-column": "--score-col",
    "--cpu-threads": "--threads", "--quiet": "--no-progress",
}


def visible_options(parser: argparse.ArgumentParser) -> set[str]:
    """Long options a user sees in ``--help`` (subcommands included), hidden aliases left out."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= visible_options(sub)
        elif action.help is not argparse.SUPPRESS:
            found.update(o for o in action.option_strings if o.startswith("--"))
    return found - {"--help"}


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: importlib.import_module(module).build_parser() for name, module in SCRIPTS.items()}


def test_every_tool_is_a_console_script_with_a_parser(parsers):
    assert len(parsers) >= 20
    for name, parser in parsers.items():
        assert isinstance(parser, argparse.ArgumentParser), name
        assert parser.prog == name, f"{name} calls itself {parser.prog!r} in its usage line"


def test_shared_concepts_have_one_spelling(parsers):
    wrong = [f"{name}: {option} (use {SECOND_SPELLINGS[option]})"
             for name, parser in parsers.items() for option in sorted(visible_options(parser))
             if option in SECOND_SPELLINGS]
    assert not wrong, "\n".join(wrong)


def test_model_tools_share_the_model_flags(parsers):
    for name, parser in parsers.items():
        if any(a.dest == "checkpoint" for a in parser._actions):
            assert {"--device", "--threads"} <= visible_options(parser), name


def test_docs_list_every_tool_and_flag(parsers):
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `([\w-]+)`\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    assert set(parsers) <= set(sections), f"tools missing from docs/cli.md: {sorted(set(parsers) - set(sections))}"
    assert set(sections) <= set(parsers), f"docs/cli.md documents no such tool: {sorted(set(sections) - set(parsers))}"
    missing = [f"{name}: {option}" for name, parser in parsers.items()
               for option in sorted(visible_options(parser)) if f"`{option}" not in sections[name]]
    assert not missing, "flags missing from docs/cli.md:\n" + "\n".join(missing)


def test_help_needs_neither_torch_nor_fairseq():
    code = (
        "import importlib, json, sys\n"
        f"modules = {sorted(set(SCRIPTS.values()))!r}\n"
        "for m in modules:\n"
        "    importlib.import_module(m).build_parser().format_help()\n"
        "print(json.dumps(sorted(m for m in ('torch', 'fairseq', 'sklearn', 'faiss', 'matplotlib') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_a_deprecated_spelling_still_works_and_says_so(capsys):
    from fairseq_esm.cli.common import add_max_tokens

    parser = argparse.ArgumentParser()
    add_max_tokens(parser, 100)
    assert parser.parse_args([]).max_tokens == 100
    assert parser.parse_args(["--toks_per_batch", "7"]).max_tokens == 7
    assert "--toks_per_batch is deprecated; use --max-tokens" in capsys.readouterr().err
