"""Reading keys and words (`service.labelling.keys`)."""

from __future__ import annotations

import io

from service.labelling.keys import KeyReader, key_for_word


def test_line_mode_reads_keys_and_words():
    reader = KeyReader(io.StringIO("g\nGal\n  skip \n\nwhat\n"))
    assert not reader.interactive
    assert [reader.read_key() for _ in range(6)] == ["g", "g", "s", "", "what", "q"]
    assert key_for_word("undo") == "u" and key_for_word("help") == "?"
