"""Test-only: each page takes CHAPTERS_TEST_WRITE_SLEEP seconds to resolve, so a signal can
be sent while Sphinx writes (after every chapter executed)."""

import os
import time


def _slow(app, doctree, docname):
    time.sleep(float(os.environ.get("CHAPTERS_TEST_WRITE_SLEEP", "0")))


def setup(app):
    app.connect("doctree-resolved", _slow)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
