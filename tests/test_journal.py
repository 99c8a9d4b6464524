"""The resume journal shared by decode and flow: a killed run's torn line never corrupts later records."""

from __future__ import annotations

import json

from actionrepro.data import journal


def test_a_torn_last_line_is_closed_before_new_records_are_appended(tmp_path):
    file = tmp_path / journal.FILE_NAME
    settings = {"q": 90}
    file.write_text(json.dumps({"settings": settings, "path": "a.avi"}) + "\n" + '{"settings": {"q": 9')
    with journal.open_for_append(file) as fh:
        fh.write(json.dumps({"settings": settings, "path": "b.avi"}) + "\n")
    assert sorted(journal.read(file, settings, "path")) == ["a.avi", "b.avi"]


def test_records_made_with_other_settings_are_not_reused(tmp_path):
    file = tmp_path / journal.FILE_NAME
    file.write_text(json.dumps({"settings": {"q": 75}, "path": "a.avi"}) + "\n")
    assert journal.read(file, {"q": 90}, "path") == {}
