"""Storage URLs: read-only commands never create a database, and a bad URL is one clear line."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from m2tune import cli
from m2tune.tuning.storage import StorageError, normalise_url, redacted, open_storage, sqlite_path


def test_read_only_commands_do_not_create_a_database(tmp_path):
    missing = tmp_path / "nothing.db"
    for args in (["export", "--storage", f"sqlite:///{missing}", "--out", str(tmp_path / "out")],
                 ["report", "--storage", f"sqlite:///{missing}", "--out", str(tmp_path / "r.html")]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code != 0, result.output
        assert "no study storage at" in result.output and str(missing) in result.output
        assert "Traceback" not in result.output
        assert not missing.exists()


@pytest.mark.parametrize("url, words", [
    ("tune.db", "is not a URL"),
    ("sqlite:////no/such/folder/tune.db", "the folder /no/such/folder does not exist"),
    ("mysql://u:secret@localhost/db", "cannot open storage mysql://u:***@localhost/db"),
])
def test_bad_urls_are_named_in_one_line(url, words):
    with pytest.raises(StorageError, match=words.replace("*", r"\*")) as caught:
        open_storage(url)
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def test_url_helpers():
    assert sqlite_path("sqlite:///a/b.db?timeout=3") == "a/b.db"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql://h/db") is None
    assert redacted("postgresql://me:pw@host:5432/db") == "postgresql://me:***@host:5432/db"
    assert normalise_url("postgres://h/db").startswith("postgresql")
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
