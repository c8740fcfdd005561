"""The README's commands still parse. Every ``noisystudent ...`` command in the README's ``sh``
code blocks goes through the real command-line parser, and its settings through the real config
models, so a renamed flag or setting fails here. Nothing runs: no data is read, no model is
built, no run directory is written."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from noisystudent import cli
from noisystudent.core.config import DistillConfig, PseudoLabelConfig, SelfTrainConfig, TrainConfig
from noisystudent.core.errors import UserError
from noisystudent.core.settings_io import apply_overrides, build, read_yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"
SEPARATORS = {"&&", "||", ";", "|"}
CONFIGS = {"train": TrainConfig, "distill": DistillConfig, "pseudo-label": PseudoLabelConfig,
           "self-train": SelfTrainConfig}


def sh_blocks(text: str) -> list[str]:
    """The bodies of the ```sh code blocks."""
    return re.findall(r"^```sh[ \t]*\n(.*?)^```", text, re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a block as tokens: backslash continuations joined, comments stripped,
    a line cut at &&, ||, ; and |."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in tokens + [";"]:
            if token in SEPARATORS:
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(token)
    return commands


def noisystudent_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after the program for a ``noisystudent`` command (also
    ``.venv/bin/noisystudent``, ``python -m noisystudent`` and ``torchrun ... -m
    noisystudent``); None for any other command."""
    if tokens and os.path.basename(tokens[0]) == "noisystudent":
        return tokens[1:]
    for i, token in enumerate(tokens[:-1]):
        if token == "-m" and tokens[i + 1] == "noisystudent":
            return tokens[i + 2:]
    return None


def readme_commands(text: str) -> list[list[str]]:
    found = []
    for block in sh_blocks(text):
        for tokens in shell_commands(block):
            argv = noisystudent_argv(tokens)
            if argv is not None:
                found.append(argv)
    return found


COMMANDS = readme_commands(README.read_text())


def parse(argv: list[str], capsys):
    """The real parser on ``argv``; a flag it does not know fails the test with its message."""
    try:
        return cli.build_parser().parse_args(argv)
    except SystemExit as stop:
        message = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"`noisystudent {shlex.join(argv)}` does not parse (exit {stop.code}): "
                    f"{message[-1] if message else ''}")


def check_settings(args) -> None:
    """Build the command's config from its YAML file and flags, as the command would before
    it plans or runs anything; a renamed setting (also in --set KEY=VALUE) raises UserError."""
    cls = CONFIGS.get(args.command)
    if cls is None:
        return
    path = getattr(args, "config", None)
    values = read_yaml(path if os.path.isabs(path) else ROOT / path) if path else {}
    build(cls, apply_overrides(values, cli.config_overrides(args)))


def test_the_readme_has_its_commands():
    assert len(COMMANDS) >= 10, COMMANDS
    subcommands = {argv[0] for argv in COMMANDS if argv}
    assert {"self-train", "train", "distill", "pseudo-label", "predict", "export"} <= subcommands
    own_images = [argv for argv in COMMANDS if argv[:1] == ["self-train"]
                  and {"--data", "--unlabeled", "--budget"} <= set(argv)]
    assert own_images, "the README lost its own-images command (self-train --data ... " \
        "--unlabeled ... --budget ...)"


def test_the_readme_states_the_test_command_ci_runs():
    ci = [line.strip() for line in CI_SCRIPT.read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")
          and not line.strip().startswith(("set ", "cd "))]
    stated = {shlex.join(tokens) for block in sh_blocks(README.read_text())
              for tokens in shell_commands(block)}
    assert ci, "no command found in .ci/run"
    for command in ci:
        assert shlex.join(shlex.split(command)) in stated, \
            f"the README's code blocks do not state `{command}`, the command .ci/run calls"


@pytest.mark.parametrize("argv", COMMANDS, ids=[shlex.join(argv)[:80] for argv in COMMANDS])
def test_a_readme_command_parses_and_its_settings_build(argv, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = parse(argv, capsys)
    try:
        check_settings(args)
    except UserError as err:
        pytest.fail(f"`noisystudent {shlex.join(argv)}`: {err}")


@pytest.mark.parametrize("argv", COMMANDS, ids=[shlex.join(argv)[:80] for argv in COMMANDS])
def test_a_readme_command_with_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0, capsys.readouterr().err


def test_a_renamed_flag_or_setting_fails_the_check(capsys):
    own = next(argv for argv in COMMANDS if argv[:1] == ["self-train"] and "--unlabeled" in argv)
    renamed = ["--unlabelled" if token == "--unlabeled" else token for token in own]
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse(renamed, capsys)
    args = parse(["train", "--set", "learning_rate=0.1"], capsys)
    with pytest.raises(UserError):
        check_settings(args)
