"""`chapters publish`: the versioned site, versions.json, latest/, the leak scan, no CDN.

The published sites are built once per session and shared with test_pdf.py and
test_browser.py (through ``small_site`` / ``book_site`` below): the small book of
tests/roots/test-site as v0.1 and v0.2 (latest), and the real book as v1.0 (latest).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import REPO, ROOTS, require_tool

from chapters_support.cli import main
from chapters_support.publish import site as site_module
from chapters_support.publish.build import Built
from chapters_support.publish.scan import Scanner, scan_tree
from chapters_support.publish.site import redirect_page, write_alias
from chapters_support.publish.versions import (
    ALIAS,
    VersionError,
    check_version,
    updated_versions,
)

ARTIFACTS = REPO / "test-artifacts"
COLAB = "https://colab.research.google.com/github/derive-and-verify/derive-and-verify/blob/gh-pages"


# -- the published sites, built once per session -------------------------------------------


def require_latex() -> None:
    """xelatex, latexmk and the TeX fonts hyperref and jupyterBook.cls load."""
    require_tool("xelatex")
    require_tool("latexmk")
    kpsewhich = require_tool("kpsewhich")
    for tfm in ("pzdr.tfm", "rsfs10.tfm"):
        found = subprocess.run([kpsewhich, tfm], capture_output=True, text=True).stdout.strip()
        if not found:
            message = f"TeX font metric {tfm} is missing (Debian: texlive-fonts-recommended)"
            if os.environ.get("CI"):
                pytest.fail(f"{message}; CI must install everything the tests need")
            pytest.skip(message)


def publish(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``chapters publish ARGS`` in-process; returns the exit code and all output."""
    out = io.StringIO()
    saved = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(["publish", *map(str, args)])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return code, out.getvalue()


_ONCE: dict[str, tuple[bool, Any]] = {}


def _once(key: str, make: Any) -> Any:
    """One result per test session, shared by the three test modules (a session fixture
    defined in one module is not visible to the others)."""
    if key not in _ONCE:
        try:
            _ONCE[key] = (True, make())
        except BaseException as error:  # a skip or a failure is replayed the same way
            _ONCE[key] = (False, error)
    ok, value = _ONCE[key]
    if not ok:
        raise value
    return value


@dataclass
class Site:
    root: Path  # the site folder (versions.json, latest/, one folder per version)
    book: Path  # the copy of the book it was built from
    versions: list[str]
    seconds: dict[str, float]

    def version(self, name: str) -> Path:
        return self.root / name

    def page(self, version: str, name: str):
        from bs4 import BeautifulSoup

        path = self.root / version / f"{name}.html"
        return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def web_root(tmp_path_factory) -> Path:
    """The folder test_browser.py serves: small/ and book/ are the two sites."""
    return _once("web", lambda: tmp_path_factory.mktemp("web"))


def small_site(tmp_path_factory) -> Site:
    def make() -> Site:
        require_latex()
        book = tmp_path_factory.mktemp("small-book") / "test-site"
        shutil.copytree(ROOTS / "test-site", book)
        root = web_root(tmp_path_factory) / "small"
        seconds = {}
        start = time.perf_counter()
        code, output = publish("--book", book, "--version", "v0.1", "--site", root)
        assert code == 0, output
        seconds["v0.1"] = time.perf_counter() - start
        # the second version comes from the cache the first one filled: nothing executes
        start = time.perf_counter()
        code, output = publish(
            "--book",
            book,
            "--version",
            "v0.2",
            "--site",
            root,
            "--latest",
            env={"CHAPTERS_REQUIRE_CACHE": "1"},
        )
        assert code == 0, output
        seconds["v0.2"] = time.perf_counter() - start
        return Site(root, book, ["v0.1", "v0.2"], seconds)

    return _once("small", make)


def book_site(tmp_path_factory) -> Site:
    """The real book as v1.0, from the book's own jupyter-cache when there is one."""

    def make() -> Site:
        require_latex()
        book = tmp_path_factory.mktemp("real-book") / "book"
        shutil.copytree(
            REPO / "book",
            book,
            ignore=lambda folder, names: (
                [n for n in names if n != ".jupyter_cache"] if Path(folder).name == "_build" else []
            ),
        )
        root = web_root(tmp_path_factory) / "book"
        start = time.perf_counter()
        code, output = publish("--book", book, "--version", "v1.0", "--site", root, "--latest")
        assert code == 0, output[-6000:]
        seconds = {"v1.0": time.perf_counter() - start}
        match = re.search(r"HTML in (\d+) s, PDF in (\d+) s", output)
        if match:
            seconds["html"], seconds["pdf"] = float(match[1]), float(match[2])
        record("publish", {"book_v1.0_seconds": seconds})
        return Site(root, book, ["v1.0"], seconds)

    return _once("book", make)


def record(name: str, data: dict) -> Path:
    """Merge ``data`` into test-artifacts/<name>.json (measurements for humans and CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps({**old, **data}, indent=2) + "\n", encoding="utf-8")
    return path


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# Tags whose URL the browser fetches by itself (scripts, styles, fonts, images, frames);
# an <a href> to a paper is a link the reader may follow, not an asset.
ASSET_ATTRIBUTES = {
    "script": "src",
    "link": "href",
    "img": "src",
    "iframe": "src",
    "source": "src",
    "audio": "src",
    "video": "src",
    "embed": "src",
    "object": "data",
}
LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon"}
_CSS_URL = re.compile(r"""(?:@import\s+|url\()\s*['"]?(https?:)?//""", re.I)


def external_assets(root: Path) -> list[str]:
    """Every script, style, font or image a page of ``root`` would load from another host."""
    from bs4 import BeautifulSoup

    found = []
    for path in sorted(root.rglob("*.html")):
        name = path.relative_to(root).as_posix()
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        for tag, attribute in ASSET_ATTRIBUTES.items():
            for element in soup.find_all(tag):
                url = element.get(attribute) or ""
                # a stylesheet, preload or icon link loads; canonical/alternate links do not
                if tag == "link" and not LOADING_RELS & set(element.get("rel", [])):
                    continue
                host = urlsplit(url).hostname
                if url.startswith(("http:", "https:", "//")) and host not in {
                    "localhost",
                    "127.0.0.1",
                }:
                    found.append(f"{name}: <{tag} {attribute}={url}>")
        for style in soup.find_all("style"):
            if _CSS_URL.search(style.get_text()):
                found.append(f"{name}: <style> loads from another host")
        # sphinx-thebe's loader names its CDN in an inline script
        for marker in ("unpkg.com", "cdn.jsdelivr.net", "cdnjs.cloudflare.com"):
            if marker in str(soup.find("head")):
                found.append(f"{name}: <head> names {marker}")
    for css in sorted(root.rglob("*.css")):
        if _CSS_URL.search(css.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{css.relative_to(root).as_posix()}: loads from another host")
    return found


# -- fast: the parts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["latest", "stable", "../up", "a b", "", ".hidden", "v1.json"])
def test_unusable_version_names_are_refused(name):
    with pytest.raises(VersionError):
        check_version(name)


def test_versions_json_is_sorted_with_exactly_one_preferred():
    entries = updated_versions([], "v1.0", latest=True)
    entries = updated_versions(entries, "v1.10", latest=False)
    entries = updated_versions(entries, "v1.2", latest=True)
    entries = updated_versions(entries, "dev", latest=False)
    assert [e["version"] for e in entries] == ["dev", "v1.10", "v1.2", "v1.0"]
    assert [e["version"] for e in entries if e.get("preferred")] == ["v1.2"]
    assert entries[2] == {
        "name": "v1.2 (latest)",
        "version": "v1.2",
        "url": "../v1.2/",
        "preferred": True,
    }
    # re-publishing an old version without --latest keeps the preferred one
    again = updated_versions(entries, "v1.0", latest=False)
    assert again == entries
    absolute = updated_versions(entries, "v1.0", latest=False, base_url="https://x.io/book/")
    assert absolute[-1]["url"] == "https://x.io/book/v1.0/"


def test_alias_redirects_every_page_keeping_the_anchor(tmp_path):
    version = tmp_path / "v2"
    (version / "sub").mkdir(parents=True)
    (version / "_static").mkdir()
    for page in ("index.html", "intro.html", "sub/deep.html", "_static/fragment.html"):
        (version / page).write_text("<p>page</p>", encoding="utf-8")
    write_alias(tmp_path, "v2")
    alias = tmp_path / "latest"
    assert sorted(p.relative_to(alias).as_posix() for p in alias.rglob("*.html")) == [
        "index.html",
        "intro.html",
        "sub/deep.html",
    ]
    deep = (alias / "sub" / "deep.html").read_text(encoding="utf-8")
    assert 'content="0; url=../../v2/sub/deep.html"' in deep
    assert "location.hash" in deep
    assert 'location.replace("a\\"b" + location.search + location.hash)' in redirect_page('a"b')


# The canary: tokens, paths and a hostname planted where a careless cell would put them.
PLANTED = {
    "chapter.html": "<pre>export GH=ghp_" + "a1B2c3D4" * 5 + "</pre>",
    "searchindex.js": 'Search.setIndex({"docnames": ["x"], "p": "/home/alice/book/x.md"})',
    "_sources/chapter.ipynb": '{"text": "cwd: /root/work",\n "key": "AKIAABCDEFGHIJKLMNOP"}',
    "_static/ok.js": 'var u = "https://example.com/root/page"; var p = "/usr/lib/x";',
    "notes.txt": "built on gpu-runner-42.internal by github_pat_" + "x" * 30,
    "_images/pic.png": "\x89PNG gpu-runner-42 token=0123456789abcdef0123",
    "_sources/llm.ipynb": '{"text": ["login(\\"hf_' + "Ab3" * 12 + '\\")\\n",\n'
    '"OPENAI_API_KEY=sk-proj-' + "Zy9_" * 8 + '\\n"]}',
    # words with "sk-" and "hf_" inside, and short ones, are no tokens
    "_static/words.js": 'var a = "task-1 disk-usage sk-learn hf_hub"; // a risk-free ask-me',
}


def plant(root: Path) -> None:
    for name, text in PLANTED.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_leak_scan_catches_the_canary_and_names_file_and_line(tmp_path):
    plant(tmp_path)
    leaks = scan_tree(tmp_path, hosts=["gpu-runner-42.internal", "gpu-runner-42"])
    found = sorted((leak.path, leak.kind) for leak in leaks)
    assert found == [
        ("_images/pic.png", "token in a URL"),
        ("_sources/chapter.ipynb", "AWS access key"),
        ("_sources/chapter.ipynb", "root's home path"),
        ("_sources/llm.ipynb", "API key (sk-...)"),
        ("_sources/llm.ipynb", "Hugging Face token"),
        ("chapter.html", "GitHub token"),
        ("notes.txt", "GitHub token"),
        ("notes.txt", "hostname of the build machine"),
        ("searchindex.js", "home folder path"),
    ]
    text = "\n".join(map(str, leaks))
    assert "searchindex.js:1: home folder path: /home/alice" in text
    assert "_sources/chapter.ipynb:2: AWS access key" in text  # the line of the match
    # secrets are shortened in the report, so CI logs do not carry them either
    assert "a1B2c3D4a1B2" not in text and "ghp_a1B2… (44 characters)" in text
    assert "_sources/llm.ipynb:1: Hugging Face token: hf_Ab3Ab… (39 characters)" in text
    assert "_sources/llm.ipynb:2: API key (sk-...): sk-proj-… (40 characters)" in text


def test_leak_scan_allows_what_it_is_told(tmp_path):
    plant(tmp_path)
    scanner = Scanner(hosts=[], allow=[r"^/home/alice"])
    leaks = [
        leak for p in sorted(tmp_path.rglob("*")) if p.is_file() for leak in scanner.file(p, p.name)
    ]
    assert "home folder path" not in {leak.kind for leak in leaks}


def test_a_leaking_build_publishes_nothing(tmp_path, monkeypatch):
    """The canary end to end: the build (faked) leaks; the site stays as it was."""
    book = tmp_path / "book"
    shutil.copytree(ROOTS / "test-site", book)
    site = tmp_path / "site"
    site.mkdir()
    (site / "versions.json").write_text("[]\n", encoding="utf-8")
    before = tree_digest(site)

    def leaky_build(book, work, version, *, cache, sde, **edition):
        html = work / "html"
        html.mkdir(parents=True)
        plant(html)
        (html / "reports").mkdir()
        pdf = work / "book.pdf"
        pdf.write_bytes(b"%PDF-1.5\n")
        tex = work / "book.tex"
        tex.write_text("\\textbf{ok}\n", encoding="utf-8")
        return Built(html=html, pdf=pdf, tex=tex, seconds_html=0.0, seconds_pdf=0.0)

    monkeypatch.setattr(site_module, "build_version", leaky_build)
    monkeypatch.setattr("socket.gethostname", lambda: "gpu-runner-42")
    code, output = publish("--book", book, "--version", "v9", "--site", site)
    assert code == 1
    assert "the leak scan found" in output and "nothing was published" in output
    assert "chapter.html:1: GitHub token: ghp_a1B2…" in output
    assert "notes.txt:1: hostname of the build machine: gpu-runner-42" in output
    assert tree_digest(site) == before  # no v9/, no staging folder, versions.json as it was
    assert sorted(p.name for p in site.iterdir()) == ["versions.json"]


def test_vendored_mathjax_is_one_small_licensed_file():
    folder = REPO / "src" / "chapters_support" / "sphinx_ext" / "_static" / "mathjax"
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "README.md", "tex-svg-full.js"]
    assert (folder / "tex-svg-full.js").stat().st_size < 3_000_000
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "3.2.2" in readme and "Apache-2.0" in readme
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    digest = hashlib.sha256((folder / "tex-svg-full.js").read_bytes()).hexdigest()
    assert digest in readme


# -- slow: the small book published as v0.1 and v0.2 -----------------------------------------


@pytest.mark.slow
def test_versions_json_lists_both_versions_and_prefers_the_latest(tmp_path_factory):
    site = small_site(tmp_path_factory)
    entries = json.loads((site.root / "versions.json").read_text(encoding="utf-8"))
    assert entries == [
        {"name": "v0.2 (latest)", "version": "v0.2", "url": "../v0.2/", "preferred": True},
        {"name": "v0.1", "version": "v0.1", "url": "../v0.1/"},
    ]
    assert sorted(p.name for p in site.root.iterdir()) == [
        ".nojekyll",
        "index.html",
        "latest",
        "v0.1",
        "v0.2",
        "versions.json",
    ]
    assert 'url=latest/"' in (site.root / "index.html").read_text(encoding="utf-8")
    stub = (site.root / "latest" / "gradients.html").read_text(encoding="utf-8")
    assert 'url=../v0.2/gradients.html"' in stub


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v0.1", "v0.2"])
def test_every_page_shows_switcher_pdf_notebook_and_colab(tmp_path_factory, version):
    site = small_site(tmp_path_factory)
    folder = site.version(version)
    for name in ("intro", "gradients", "status"):
        page = site.page(version, name)
        assert page.select_one("button.version-switcher__button"), name
        options = " ".join(
            s.get_text() for s in page.select("script") if "theme_switcher" in s.get_text()
        )
        assert "theme_switcher_json_url = '../versions.json'" in options
        assert f"theme_switcher_version_match = '{version}'" in options
        pdf = page.select_one("a.btn-download-pdf-button")
        assert pdf["href"] == "site-test.pdf" and (folder / pdf["href"]).is_file(), name
    chapter = site.page(version, "gradients")
    notebook = chapter.select_one("a.btn-download-notebook-button")["href"]
    assert notebook == "_sources/gradients.ipynb"
    cells = json.loads((folder / notebook).read_text(encoding="utf-8"))["cells"]
    assert [c["id"] for c in cells] == [f"cell-{i}" for i in range(len(cells))]
    # its first cell makes it run outside the repository: this package from the repository
    # at the version that built the page (the copy of the book here is not a git checkout),
    # the kernel's dependencies, and the chapter's source from the site branch
    install = "".join(cells[0]["source"])
    assert cells[0]["metadata"]["tags"] == ["chapters-install"]
    assert (
        '"--no-deps", "chapters-support @ git+https://github.com/derive-and-verify/'
        f'derive-and-verify@{version}"' in install
    )
    assert '"pylatexenc<3,>=2.10"' in install and '"torch>=2.4"' in install
    assert "ipykernel" not in install and "jupyter-book" not in install
    assert (
        "https://raw.githubusercontent.com/derive-and-verify/derive-and-verify/gh-pages/"
        f"{version}/_sources/gradients.md" in install
    )
    assert (folder / "_sources" / "gradients.md").is_file()
    assert any("PASS" in json.dumps(c.get("outputs", [])) for c in cells)
    colab = chapter.select_one("a.btn-launch-colab-button")["href"]
    assert colab == f"{COLAB}/{version}/_sources/gradients.ipynb"


@pytest.mark.slow
def test_nothing_private_or_volatile_is_published(tmp_path_factory):
    site = small_site(tmp_path_factory)
    for version in site.versions:
        folder = site.version(version)
        assert not (folder / "reports").exists() and not (folder / ".buildinfo").exists()
        assert scan_tree(folder) == []
        report = json.loads((folder / "derivations.json").read_text(encoding="utf-8"))
        assert report["totals"] == {"pass": 1, "fail": 0, "unverified": 0, "total": 1}
    assert not list(site.root.glob(".*.staging")) and not list(site.root.glob(".*.old"))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["small", "book"])
def test_no_page_loads_anything_from_another_host(tmp_path_factory, which):
    site = small_site(tmp_path_factory) if which == "small" else book_site(tmp_path_factory)
    assert external_assets(site.root) == []
    # MathJax comes from the site itself
    page = (site.root / site.versions[-1] / "intro.html").read_text(encoding="utf-8")
    chapter = next(
        p
        for p in sorted((site.root / site.versions[-1]).glob("*.html"))
        if 'class="math' in p.read_text(encoding="utf-8")
    ).read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-svg-full.js' in chapter
    assert "thebe" not in page.lower()


@pytest.mark.slow
def test_a_published_version_is_not_replaced_without_force(tmp_path_factory):
    site = small_site(tmp_path_factory)
    before = tree_digest(site.root)
    code, output = publish("--book", site.book, "--version", "v0.1", "--site", site.root)
    assert code == 1
    assert "v0.1 is already published" in output and "--force" in output
    assert tree_digest(site.root) == before


@pytest.mark.slow
def test_republishing_with_force_changes_no_byte(tmp_path_factory):
    site = small_site(tmp_path_factory)
    before = tree_digest(site.root)
    code, output = publish(
        "--book",
        site.book,
        "--version",
        "v0.1",
        "--site",
        site.root,
        "--force",
        env={"CHAPTERS_REQUIRE_CACHE": "1"},
    )
    assert code == 0, output
    after = tree_digest(site.root)
    assert [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)] == []


@pytest.mark.slow
def test_require_cache_publishes_nothing_it_would_have_to_execute(tmp_path):
    require_tool("jupyter-book")
    book = tmp_path / "test-site"
    shutil.copytree(ROOTS / "test-site", book)
    code, output = publish(
        "--book",
        book,
        "--version",
        "v1",
        "--site",
        tmp_path / "site",
        env={"CHAPTERS_REQUIRE_CACHE": "1"},
    )
    assert code == 1
    assert "the html build failed" in output and "require-cache mode" in output
    assert not (tmp_path / "site" / "v1").exists()


def _clean_build(book, work, version, *, cache, sde, **edition):
    """A built version without a real build: two pages and a PDF."""
    html = work / "html"
    (html / "sub").mkdir(parents=True)
    for page in ("index.html", "intro.html", "sub/deep.html"):
        (html / page).write_text(f"<p>{version} {page}</p>", encoding="utf-8")
    pdf = work / "book.pdf"
    pdf.write_bytes(b"%PDF-1.5\n")
    tex = work / "book.tex"
    tex.write_text("\\textbf{ok}\n", encoding="utf-8")
    return Built(html=html, pdf=pdf, tex=tex, seconds_html=0.0, seconds_pdf=0.0)


@pytest.mark.parametrize("where", ["the version's folder", "latest/", "versions.json"])
def test_a_full_disk_while_publishing_leaves_the_site_as_it_was(tmp_path, monkeypatch, where):
    """Issue 12: ENOSPC at any write of a publish: one clear error, and every byte of the site
    (the published version, versions.json, latest/, index.html) as it was, no staging left."""
    import errno

    book = tmp_path / "book"
    shutil.copytree(ROOTS / "test-site", book)
    site = tmp_path / "site"
    monkeypatch.setattr(site_module, "build_version", _clean_build)
    code, output = publish("--book", book, "--version", "v1", "--site", site, "--latest")
    assert code == 0, output
    before = tree_digest(site)

    def is_the_place(path: Path) -> bool:
        relative = path.relative_to(site).as_posix()
        return {
            "the version's folder": relative.startswith(".v2.staging/"),
            "latest/": relative.startswith(f".{ALIAS}.staging/"),
            "versions.json": relative == ".versions.json.staging",
        }[where]

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    write_text, copyfile = Path.write_text, shutil.copyfile

    def write_text_or_fail(self, *args, **kwargs):
        if self.is_relative_to(site) and is_the_place(self):
            full(self)
        return write_text(self, *args, **kwargs)

    def copyfile_or_fail(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(site) and is_the_place(Path(dst)):
            full(dst)
        return copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text_or_fail)
    monkeypatch.setattr(shutil, "copyfile", copyfile_or_fail)
    monkeypatch.setattr(shutil, "copy2", copyfile_or_fail)
    code, output = publish("--book", book, "--version", "v2", "--site", site, "--latest")
    assert code == 1
    message = " ".join(output.split())
    assert f"no space left on the device while writing version v2 into {site}" in message
    assert (
        "nothing was published: every published version, versions.json, latest/ and "
        "index.html are as they were; free some space and publish again" in message
    )
    assert "Traceback" not in output
    assert tree_digest(site) == before
    assert sorted(p.name for p in site.iterdir()) == sorted(
        [".nojekyll", "index.html", "latest", "v1", "versions.json"]
    )
