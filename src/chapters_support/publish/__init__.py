"""Publishing the book: a versioned site of HTML and PDF, the switcher JSON, the leak scan.

``chapters publish`` (``cli/publish.py``) calls :func:`chapters_support.publish.site.publish`;
:mod:`chapters_support.publish.pages` is the Sphinx side, what every published page shows.
Nothing is imported here, so the CLI and the Sphinx extension load only what they use.
"""
