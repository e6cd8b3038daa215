"""The README's two commands are the ones CI and users run; the README stays short and its links and docs/ hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def test_ci_runs_the_readme_test_command() -> None:
    """Both CI commands (the suite, then the container stage) are the README's, word for word."""
    readme = (ROOT / "README.md").read_text()
    lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    commands = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert commands[-1] == "bash deploy/container/test.sh" and "python -m pytest" in commands[0]
    for command in commands:
        assert command in readme


def test_readme_serve_command_chooses_the_tiny_profile_explicitly() -> None:
    first_block = (ROOT / "README.md").read_text().split("```bash\n")[1].split("```")[0]
    assert "AUDIO_STUDIO_PROFILE=tiny" in first_block and "bentoml serve service:AudioStudio" in first_block


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, over {README_MAX_LINES}: move reference material to docs/"
        " (performance figures to bench/README.md) and link to it"
    )


def relative_links(markdown: str) -> list[str]:
    """Link and image targets outside code, without URLs (any scheme) and in-page anchors."""
    text = INLINE_CODE.sub("", FENCE.sub("", markdown))
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [target for target in targets if not target.startswith("#") and not SCHEME.match(target)]


def test_relative_links_point_to_files_that_exist() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in relative_links(page.read_text()):
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_link_finder_skips_code_urls_and_anchors() -> None:
    markdown = (
        'See [a](docs/a.md#x), ![b](b.png "title"), [c](https://example.com), [d](#here), `[e](nowhere.md)`.\n'
        "```bash\n[f](in-code.md)\n```\n"
        "[g]: ../g.py\n"
    )
    assert relative_links(markdown) == ["docs/a.md#x", "b.png", "../g.py"]
