"""The README's and docs/'s ``python -m jobs ...`` commands against the code (issue 26): every command of a
shell snippet parses with the jobs' own argparse parser, every command named in the prose (`python -m jobs
drift-report --model M [--out DIR]`) names a subcommand and flags that exist (a renamed flag or subcommand
fails here, not in a reader's shell), and no snippet pins a calendar date (a walkthrough copied on another
day must still work: dates are ``today-Nd``)."""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

import pytest

from devharness import ROOT
from jobs.__main__ import build_parser

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL = {"bash", "sh", "shell", "console", ""}
INLINE = re.compile(r"`[^`]*python -m jobs ([^`]*)`")
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
ISO_DATE = re.compile(r"\b(19|20)\d\d-\d\d-\d\d\b")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: list[str]  # what follows `python -m jobs`
    usage: bool = False  # named in the prose, with placeholders: its subcommand and flags are checked


def _commands_in(text: str) -> list[str]:
    """The `python -m jobs` commands of one shell line: split at && ; | (outside quotes), comments dropped."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return []
    out: list[list[str]] = [[]]
    for tok in tokens:
        if tok in {"&&", ";", "|", "||", "&"}:
            out.append([])
        else:
            out[-1].append(tok)
    found = []
    for cmd in out:
        for i in range(len(cmd) - 2):
            if cmd[i].endswith("python") and cmd[i + 1 : i + 3] == ["-m", "jobs"]:
                found.append(shlex.join(cmd[i + 3 :]))
    return found


def doc_commands() -> list[Command]:
    found: list[Command] = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        name = path.relative_to(ROOT)
        fence: str | None = None
        pending, start = "", 0
        for n, line in enumerate(lines, 1):
            m = FENCE.match(line.strip())
            if m:
                fence = m.group(1) if fence is None else None
                continue
            if fence is not None and fence in SHELL:
                if not pending:
                    start = n
                pending += line.rstrip("\\") + " " if line.rstrip().endswith("\\") else line
                if line.rstrip().endswith("\\"):
                    continue
                cmds, pending = _commands_in(pending), ""
                found += [Command(f"{name}:{start}", shlex.split(c)) for c in cmds]
            elif fence is None:
                found += [Command(f"{name}:{n}", span.split(), usage=True) for span in INLINE.findall(line)]
    return found


COMMANDS = doc_commands()


def test_the_docs_have_jobs_commands_to_check() -> None:
    assert len(SNIPPETS) >= 15 and len(USAGES) >= 10  # the walkthroughs are found, not silently skipped
    subcommands = {_subcommand(c.argv) for c in SNIPPETS}
    assert {"seed", "features", "train", "publish", "drift-report", "replay"} <= subcommands


GLOBAL_WITH_VALUE = {"--store", "--s3-endpoint-url"}


def _subcommand(argv: list[str]) -> str | None:
    """The first word that can be a subcommand's name, past the global options and their values; None for
    a generic usage line (`python -m jobs [--store DIR] SUBCOMMAND`, `python -m jobs ...`)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word.split("=")[0] in GLOBAL_WITH_VALUE:
            skip = "=" not in word
        elif re.fullmatch(r"[a-z][a-z0-9-]*", word):
            return word
    return None


SNIPPETS = [c for c in COMMANDS if not c.usage]
# Usage lines naming a subcommand (generic ones, `python -m jobs [--store DIR] SUBCOMMAND`, name none).
USAGES = [c for c in COMMANDS if c.usage and _subcommand(c.argv) is not None]


@pytest.mark.parametrize("command", SNIPPETS, ids=[c.where for c in SNIPPETS])
def test_a_snippets_jobs_command_parses(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser().parse_args(command.argv)
    except SystemExit:
        pytest.fail(f"{command.where}: python -m jobs {shlex.join(command.argv)}\n{capsys.readouterr().err}")


def _subparsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(action.choices)


@pytest.mark.parametrize("command", USAGES, ids=[c.where for c in USAGES])
def test_a_jobs_command_named_in_the_prose_exists_with_its_flags(command: Command) -> None:
    parser, sub = _subparsers()
    name = _subcommand(command.argv)
    assert name in sub, f"{command.where}: no subcommand {name!r} (python -m jobs {' '.join(command.argv)})"
    known = set(parser._option_string_actions) | set(sub[name]._option_string_actions)
    flags = set(FLAG.findall(" ".join(command.argv)))
    assert flags <= known, f"{command.where}: {name} has no {sorted(flags - known)}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_a_documented_jobs_command_pins_no_calendar_date(command: Command) -> None:
    dated = [a for a in command.argv if ISO_DATE.search(a)]
    assert not dated, f"{command.where}: {dated}: use today-Nd, so the walkthrough works on any day"


def test_the_checker_catches_a_wrong_flag_and_a_pinned_date() -> None:
    """The checks can fail: a renamed flag does not parse, a calendar date is found."""
    (bad,) = _commands_in("FOO=1 .venv/bin/python -m jobs seed --begin today-2d && echo done  # comment")
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(bad))
    (dated,) = _commands_in("python -m jobs seed --start 2026-11-01 --days 28")
    assert ISO_DATE.search(dated)
    assert build_parser().parse_args(["seed", "--start", "today-27d", "--days", "28"]).days == 28
    _, sub = _subparsers()
    assert "--windows" not in sub["drift-report"]._option_string_actions  # what a stale usage line would name


def test_every_job_time_argument_takes_relative_times() -> None:
    """today-Nd (UTC midnights) and now-N(s|m|h|d), on every job flag that takes a time."""
    parser, sub = _subparsers()
    timed = {
        (name, a.dest) for name, p in sub.items() for a in p._actions if getattr(a.type, "__name__", "") == "_when"
    }
    expected = {("seed", "start"), ("features", "start"), ("materialize", "start"), ("materialize", "end")}
    expected |= {("materialize-incremental", "end"), ("replay", "start"), ("batch-predict", "as_of")}
    expected |= {("drift-report", "between"), ("drift-report", "reference_window")}
    assert expected <= timed, expected - timed
    args = parser.parse_args(["drift-report", "--model", "m", "--served-log", "x", "--between", "today-1d", "now-90m"])
    start, end = args.between
    assert start.hour == start.minute == 0 and 0 < (end - start).total_seconds() < 2 * 86400
