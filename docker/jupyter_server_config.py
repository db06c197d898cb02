"""Jupyter Server configuration of the Derive & Verify image (/etc/jupyter/).

MyST Markdown chapters open as notebooks through jupytext's contents manager, and saving a
notebook writes the `.md` chapter back. A token is always required.
"""

import os

c = get_config()  # noqa: F821  (injected by traitlets when it loads this file)

# Bound on every interface of the container only; the host publishes it as 127.0.0.1:8888.
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.allow_root = False
c.ServerApp.allow_remote_access = False

# The entrypoint refuses to start without JUPYTER_TOKEN. An empty token would switch
# authentication off, so only a non-empty one is ever set; otherwise Jupyter makes a random one.
_token = os.environ.get("JUPYTER_TOKEN", "")
if _token:
    c.IdentityProvider.token = _token

c.ServerApp.contents_manager_class = "jupytext.TextFileContentsManager"
# Chapters are MyST Markdown: `.md` files open as notebooks, `.py` files stay plain text.
c.ContentsManager.notebook_extensions = "ipynb,md"
c.ContentsManager.preferred_jupytext_formats_read = "md:myst"
c.ContentsManager.preferred_jupytext_formats_save = "md:myst"
