"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in readme


def test_readme_serve_command_chooses_the_tiny_profile_explicitly() -> None:
    first_block = (ROOT / "README.md").read_text().split("```bash\n")[1].split("```")[0]
    assert "AUDIO_STUDIO_PROFILE=tiny" in first_block and "bentoml serve service:AudioStudio" in first_block
