"""The book's Sphinx extension: the repository URL from git, and launch buttons that open notebooks that exist.

``_config.yml`` lists ``labecg.sphinx_ext`` among ``sphinx: extra_extensions``;
``jupyter-book build`` loads it and calls :func:`setup`. It fills in ``repository_url`` from
``_config.yml`` or the git remote ``origin`` (:func:`repository_url`; without one the
repository, issue, edit and launch buttons are turned off), points the edit and Binder
buttons of executed chapters (``book/notebooks/<stage>``) at their source notebooks and
the Colab button at the executed copy published on :data:`PAGES_BRANCH`, prepends an
install cell to those copies (:func:`install_cell_source`), and gives every 2x figure its
display width. It runs inside the Sphinx build only; :mod:`labecg.book` runs the
notebooks and calls ``jupyter-book``, and neither imports the other.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

from labecg.util import get_logger

log = get_logger("labecg.sphinx_ext")

#: Where the Pages deployment (``make publish``, ghp-import) puts the built HTML.
PAGES_BRANCH = "gh-pages"
_EXECUTED = "book/notebooks/"  # executed copies of notebooks/<stage>.ipynb (git-ignored)


def repository_url(book_root=".") -> Optional[str]:
    """The book's repository as an https URL, or None.

    ``repository.url`` in ``book_root/_config.yml`` when it is set; otherwise the URL of
    the git remote ``origin`` of ``book_root`` (``git@github.com:o/r.git`` and
    ``https://user:token@github.com/o/r.git`` both give ``https://github.com/o/r``);
    None when neither exists, or when ``origin`` is not a repository on GitHub, GitLab or
    Bitbucket (a clone of a local folder, as CI makes): the book theme reads the provider,
    owner and repository from the URL and cannot build with anything else.

    Raises
    ------
    ValueError
        ``repository.url`` is set but is not ``https://<provider host>/<owner>/<repo>``.
    """
    import yaml

    book_root = Path(book_root)
    config = yaml.safe_load((book_root / "_config.yml").read_text()) or {}
    configured = str((config.get("repository") or {}).get("url") or "").strip()
    url = configured or _git(book_root, "remote", "get-url", "origin") or ""
    if not url:
        return None
    url = _https_url(url)
    if not re.match(r"^https://[^/]*(github|gitlab|bitbucket)[^/]*/[^/]+/[^/]+$", url, re.IGNORECASE):
        if configured:
            raise ValueError(f"{book_root / '_config.yml'}: repository.url={configured!r}; expected "
                             "https://<github|gitlab|bitbucket host>/<owner>/<repo>")
        log.info("git remote origin %r is no GitHub, GitLab or Bitbucket repository", url)
        return None
    return url


def _https_url(url: str) -> str:
    """A git remote as an https URL without credentials or ``.git``."""
    m = re.match(r"^(?:[\w.-]+@)?([\w.-]+):(?!//)(.+)$", url)  # scp-like git@host:owner/repo
    if m:
        url = f"https://{m.group(1)}/{m.group(2)}"
    url = re.sub(r"^(?:git|ssh|http)://", "https://", url)
    url = re.sub(r"^https://[^/@]+@", "https://", url)  # credentials never reach a page
    return re.sub(r"\.git$", "", url.rstrip("/"))


def git_commit(book_root=".") -> Optional[str]:
    """The commit checked out in ``book_root``, or None outside a git work tree."""
    return _git(book_root, "rev-parse", "HEAD")


def _git(cwd, *args: str) -> Optional[str]:
    """A git command's output in ``cwd``; None when it fails or git is not installed."""
    try:
        proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def install_cell_source(url: str, commit: Optional[str] = None) -> str:
    """The first cell of a launched notebook: install labecg unless it is importable."""
    spec = f"labecg @ git+{url}" + (f"@{commit}" if commit else "")
    return ("# Colab: install labecg from the commit this page was built from. Where labecg is\n"
            "# importable already (Binder, a clone, the book build) this cell does nothing.\n"
            "import importlib.util\n\n"
            "if importlib.util.find_spec(\"labecg\") is None:\n"
            f"    %pip install --quiet \"{spec}\"\n")


def _sphinx_repository(app, config) -> None:
    """config-inited: fill in the repository URL, or turn the buttons off without one."""
    opts = dict(config.html_theme_options)
    url = opts.get("repository_url") or repository_url(app.confdir)
    if url:
        opts["repository_url"] = url
    else:
        log.info("no repository URL (_config.yml repository.url, git remote origin): "
                 "repository, issue, edit and launch buttons left off")
        for name in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            opts[name] = False
        opts["launch_buttons"] = {}
    config.html_theme_options = opts


def _sphinx_launch_paths(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: point the buttons of an executed chapter at notebooks that exist.

    ``book/notebooks/<stage>.ipynb`` is a build product. Edit, source and Binder buttons
    get the source ``notebooks/<stage>.ipynb`` on the repository's branch (Binder builds
    the repository with ``binder/``); Colab gets the page's own executed notebook, as
    published on the Pages branch under ``_sources/``, whose first cell installs labecg.
    """
    if not pagename.startswith(_EXECUTED):
        return
    opts = app.config.html_theme_options
    colab = (opts.get("launch_buttons") or {}).get("colab_url", "").rstrip("/")
    branch = opts.get("repository_branch") or "main"

    def rewrite(buttons):
        for b in buttons:
            if isinstance(b.get("buttons"), list):
                rewrite(b["buttons"])
            url = b.get("url")
            # relative URLs (the download buttons) name the page's own files under _sources/
            if not isinstance(url, str) or _EXECUTED not in url or "://" not in url:
                continue
            if colab and url.startswith(colab):
                b["url"] = url.replace(f"/blob/{branch}/{_EXECUTED}", f"/blob/{PAGES_BRANCH}/_sources/{_EXECUTED}")
            else:
                b["url"] = url.replace(_EXECUTED, "notebooks/")

    rewrite(context.get("header_buttons", []))


def _sphinx_install_cells(app, exception) -> None:
    """build-finished: prepend the install cell to the published executed notebooks."""
    url = app.config.html_theme_options.get("repository_url")
    if exception is not None or app.builder.format != "html" or not url:
        return
    import nbformat

    for path in sorted((Path(app.outdir) / "_sources" / _EXECUTED).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if nb.cells and "labecg-install" in nb.cells[0].metadata.get("tags", []):
            continue
        cell = nbformat.v4.new_code_cell(install_cell_source(url, git_commit(app.confdir)))
        cell.metadata["tags"] = ["labecg-install"]
        nb.cells.insert(0, cell)
        nbformat.write(nb, path)


def _png_size_and_dpi(path: Path) -> tuple[int, int, float] | None:
    """(width, height, dots per inch) of a PNG from its IHDR and pHYs chunks; None if not a PNG."""
    import struct

    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", data[16:24])
    at = data.find(b"pHYs")
    if at < 0:
        return width, height, 72.0
    per_x, _, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    return width, height, per_x * 0.0254 if unit == 1 else 72.0


def _sphinx_image_widths(app, exception) -> None:
    """build-finished: show every 2x figure at half its pixels, wherever the page placed it.

    A figure glued into a Markdown page (``{glue:} name`` with ``:doc:``) loses the display
    width its notebook output carries, and would be drawn one image pixel per CSS pixel:
    too large, and at half the sharpness. A PNG saved at twice the CSS resolution
    (:func:`labecg.figures.figure_png`: its pHYs chunk says 192 dpi) gets ``width`` = half
    its pixels when its ``<img>`` has no width.
    """
    if exception is not None or app.builder.format != "html":
        return
    from labecg.figures import CSS_DPI

    out = Path(app.outdir)
    sizes = {}
    tag = re.compile(r'<img\b[^>]*\bsrc="([^"]*_images/[^"]+\.png)"[^>]*>')
    for page in out.rglob("*.html"):
        text = page.read_text()

        def widen(m, page=page):  # called by tag.sub below, for this page
            img = m.group(0)
            if "width" in img:
                return img
            path = (page.parent / m.group(1)).resolve()
            if path not in sizes:
                sizes[path] = _png_size_and_dpi(path) if path.is_file() else None
            size = sizes[path]
            if size is None or abs(size[2] - 2 * CSS_DPI) > 1:
                return img
            return img.replace("<img ", f'<img width="{size[0] // 2}" ', 1)

        new = tag.sub(widen, text)
        if new != text:
            page.write_text(new)


def setup(app):
    """Sphinx extension (``_config.yml`` lists ``labecg.sphinx_ext``): repository and launch buttons."""
    app.connect("config-inited", _sphinx_repository)
    app.connect("html-page-context", _sphinx_launch_paths, priority=900)
    app.connect("build-finished", _sphinx_install_cells)
    app.connect("build-finished", _sphinx_image_widths)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
