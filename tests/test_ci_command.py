"""CI runs the tests with exactly the command the README gives, and that command fails on a missing
prerequisite and prints the reason of every skip (docs/testing.md, "Gates")."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ci_test_command() -> str:
    """The line of `.ci/run` that runs pytest."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    [command] = [line for line in lines if "pytest" in line and not line.startswith("#")]
    return command


def test_ci_requires_every_prerequisite_and_prints_skip_reasons() -> None:
    command = ci_test_command()
    assert command.startswith("IRED_TEST_REQUIRE_SERVICES=1 .venv/bin/pytest "), command
    assert "-rs" in command.split(), command


def test_readme_states_the_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    assert f"# {ci_test_command()}" in [line.strip() for line in readme]
