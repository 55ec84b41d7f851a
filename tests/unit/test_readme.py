"""The README stays true: every setting the code reads is documented in its table."""

from __future__ import annotations

from pathlib import Path

from shared.core.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    """A setting added to shared/core/config.py without a README line fails here."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Configuration") :]
    missing = [
        field.alias
        for field in Settings.model_fields.values()
        if field.alias and f"`{field.alias}`" not in table
    ]
    assert missing == []


def test_readme_names_the_two_commands() -> None:
    """The README's two commands are the ones ./dev and CI actually run."""
    text = README.read_text(encoding="utf-8")
    assert "./dev run" in text
    assert "./dev test" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev test" in ci
