"""Publishing: the Pages workflow runs only what the project has, `make publish` deploys with
ghp-import and refuses cleanly without a git remote, the repository URL comes from one place.

The book-dependent checks (buttons on the rendered pages, the reproduce box, the cache key
against a build's records) are in tests/test_book.py, beside the book they need.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from labecg import cli
from labecg.book import BookConfig, cache_key
from labecg.sphinx_ext import _sphinx_repository, install_cell_source, repository_url

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
VENV_BIN = Path(sys.executable).parent
CACHED = ["book/notebooks", "data", "runs"]


def _workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True
    wf["on"] = wf.pop(True, wf.get("on"))
    return wf


def _steps() -> list[dict]:
    jobs = _workflow()["jobs"]
    assert list(jobs) == ["book"], list(jobs)
    return jobs["book"]["steps"]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), flags=re.M))


def _commands(run: str) -> list[list[str]]:
    """Simple commands of a `run:` block, split at && ; and newlines, env assignments dropped."""
    out = []
    for line in run.splitlines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part.split(" >> ")[0])
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]
            if words:
                out.append(words)
    return out


def _test_names(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)
            and n.name.startswith("test_")}


def test_workflow_triggers_and_deploys_only_from_main():
    wf = _workflow()
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in wf["on"]
    assert wf["permissions"] == {"contents": "write"}
    steps = {s.get("name", s.get("uses")): s for s in _steps()}
    deploy = steps["Deploy to GitHub Pages"]
    assert "make publish" in deploy["run"] and deploy["if"] == "github.ref == 'refs/heads/main'"
    save = next(s for s in _steps() if s.get("uses", "").startswith("actions/cache/save"))
    assert save["if"].startswith("github.ref == 'refs/heads/main'")
    # a pull request's ref is refs/pull/N/merge: neither the cache save nor the deploy runs
    names = [s.get("name") for s in _steps()]
    assert names.index("Build the synthetic book") < names.index("Browser test of the built book") \
        < names.index("Deploy to GitHub Pages")


def test_every_command_the_workflow_runs_exists_in_the_project():
    targets = _make_targets()
    seen = {"make": set(), "labecg": set(), "pytest": set()}
    for step in _steps():
        if "uses" in step:
            assert re.fullmatch(r"actions/(checkout|cache/restore|cache/save|upload-artifact)@v4", step["uses"]), \
                step["uses"]
            continue
        for words in _commands(step["run"]):
            exe = words[0]
            if exe.startswith(".venv/bin/"):
                name = exe.removeprefix(".venv/bin/")
                assert (VENV_BIN / name).exists(), f"{exe}: not installed by make venv (looked in {VENV_BIN})"
                if name == "labecg":
                    assert words[1] in cli.COMMANDS, f"labecg {words[1]}: no such subcommand"
                    seen["labecg"].add(words[1])
                if words[1:3] == ["-m", "pytest"]:
                    files = [w for w in words[3:] if w.startswith("tests/")]
                    assert files and all((REPO / f.split("::")[0]).is_file() for f in files), words
                    if "-k" in words:
                        pattern = words[words.index("-k") + 1]
                        assert any(pattern in n for f in files for n in _test_names(REPO / f)), words
                    seen["pytest"].update(files)
            elif exe == "make":
                missing = [t for t in words[1:] if not t.startswith("-") and t not in targets]
                assert not missing, f"make {missing}: no such target in the Makefile"
                seen["make"].update(words[1:])
            elif exe == "echo":
                # the step output line holds a command substitution: check that command too
                for sub in re.findall(r"\$\(([^)]*)\)", " ".join(words)):
                    sub_words = shlex.split(sub)
                    assert sub_words[0] == ".venv/bin/labecg" and sub_words[1] in cli.COMMANDS, sub
                    seen["labecg"].add(sub_words[1])
            else:
                assert exe in ("git", "apt-get"), f"workflow runs {exe!r}, which the project does not provide"
    assert seen["make"] >= {"venv", "book-full", "publish"}
    assert seen["labecg"] == {"book-cache-key"}
    assert "tests/test_book.py" in seen["pytest"]


def test_cache_is_keyed_by_the_book_and_holds_what_the_book_checks():
    steps = _steps()
    key_step = next(s for s in steps if s.get("id") == "key")
    assert "labecg book-cache-key --full)" in key_step["run"]  # the key of what make book-full builds
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save"))
    assert restore["with"]["key"] == save["with"]["key"]
    assert "${{ steps.key.outputs.key }}" in restore["with"]["key"]
    assert restore["with"]["key"].startswith(restore["with"]["restore-keys"])
    assert restore["with"]["path"].split() == save["with"]["path"].split() == CACHED
    # the default build's folders all lie under the cached paths
    cfg = BookConfig()
    for folder in (cfg.data_root, cfg.cohort_dir, cfg.run_dir):
        assert any(Path(folder).is_relative_to(p) for p in CACHED), folder
    # make venv in the workflow installs the same torch release as the Makefile's default
    env = _workflow()["jobs"]["book"]["env"]
    make_torch = re.search(r"^TORCH_SPEC \?= torch==([\d.]+)", (REPO / "Makefile").read_text(), flags=re.M)
    assert env["TORCH_SPEC"] == f"torch=={make_torch.group(1)}+cpu"


def test_cache_key_follows_parameters_and_notebooks(tmp_path):
    root = tmp_path / "book"
    root.mkdir()
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    base = cache_key(BookConfig(book_root=root))
    assert cache_key(BookConfig(book_root=root)) == base
    assert cache_key(BookConfig(book_root=root, epochs=BookConfig().epochs + 1)) != base
    # force is no notebook parameter: not part of any stage's key
    assert cache_key(BookConfig(book_root=root, force=True)) == base
    nb = root / "notebooks" / "02_signals.ipynb"
    nb.write_text(nb.read_text() + "\n")
    assert cache_key(BookConfig(book_root=root)) != base
    shutil.copy(REPO / "notebooks" / "02_signals.ipynb", nb)
    assert cache_key(BookConfig(book_root=root)) == base
    # split execution runs the results chapter only: its key alone
    assert cache_key(BookConfig(book_root=root, from_run=True)) != base


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _shell_env(**extra) -> dict:
    """The environment of a shell, not of the make running this suite (`make test`): a nested
    make would announce "Entering directory" on stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return {**env, **extra}


def _publish_tree(tmp_path: Path) -> Path:
    """A git work tree with the Makefile and a built site, no remote."""
    work = tmp_path / "work"
    (work / "_build" / "html").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", work / "Makefile")
    (work / "_build" / "html" / "index.html").write_text("<html><body>book</body></html>\n")
    (work / "_build" / "html" / "_static").mkdir()
    (work / "_build" / "html" / "_static" / "x.css").write_text("p {}\n")
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "Makefile")
    _git(work, "commit", "-q", "-m", "start")
    return work


def test_make_publish_refuses_cleanly_without_a_remote(tmp_path):
    work = _publish_tree(tmp_path)
    proc = subprocess.run(["make", "publish"], cwd=work, capture_output=True, text=True, env=_shell_env())
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no git remote 'origin'" in lines[0], proc.stderr
    assert not (work / ".venv").exists()  # refused before building anything


def test_make_publish_pushes_the_site_to_gh_pages(tmp_path):
    work = _publish_tree(tmp_path)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    _git(work, "remote", "add", "origin", str(remote))
    env = _shell_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                     GIT_COMMITTER_EMAIL="t@example.org")
    # -o book-full: take the built site as it is (the book target is what `make book-full` tests)
    proc = subprocess.run(["make", "-o", "book-full", "publish", f"BIN={VENV_BIN}"], cwd=work,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    files = set(_git(remote, "ls-tree", "-r", "--name-only", "gh-pages").splitlines())
    assert files == {".nojekyll", "index.html", "_static/x.css"}
    assert _git(remote, "show", "gh-pages:index.html") == "<html><body>book</body></html>"
    assert _git(work, "rev-parse", "--short", "HEAD") in _git(remote, "log", "-1", "--format=%s", "gh-pages")


def test_repository_url_from_config_else_origin(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "_config.yml").write_text("title: x\nrepository:\n  url: \"\"\n")
    assert repository_url(root) is None  # not a git work tree, nothing configured
    _git(root, "init", "-q")
    assert repository_url(root) is None  # a work tree without remote
    for remote, expected in [
        ("git@github.com:someone/labecg.git", "https://github.com/someone/labecg"),
        ("https://github.com/someone/labecg.git", "https://github.com/someone/labecg"),
        ("https://x-access-token:abc123@github.com/someone/labecg", "https://github.com/someone/labecg"),
        ("ssh://git@gitlab.com/group/labecg.git", "https://gitlab.com/group/labecg"),
    ]:
        subprocess.run(["git", "-C", str(root), "remote", "remove", "origin"], capture_output=True)
        _git(root, "remote", "add", "origin", remote)
        assert repository_url(root) == expected, remote
    (root / "_config.yml").write_text("repository:\n  url: https://github.com/fork/book\n")
    assert repository_url(root) == "https://github.com/fork/book"


def test_a_clone_of_a_local_folder_has_no_repository_url(tmp_path):
    # A clean clone of a local checkout (as CI makes) has a path as origin. The theme splits
    # a repository URL into host/owner/repo of a known provider and crashes the build on
    # anything else, so such an origin must leave the buttons off.
    root = tmp_path / "r"
    root.mkdir()
    (root / "_config.yml").write_text("repository:\n  url: \"\"\n")
    _git(root, "init", "-q")
    for remote in ["/work/main", "../labecg", "file:///srv/git/labecg.git",
                   "https://git.example.org/labecg", "https://example.org/a/b"]:
        subprocess.run(["git", "-C", str(root), "remote", "remove", "origin"], capture_output=True)
        _git(root, "remote", "add", "origin", remote)
        assert repository_url(root) is None, remote
    (root / "_config.yml").write_text("repository:\n  url: /srv/labecg\n")
    with pytest.raises(ValueError, match="repository.url"):
        repository_url(root)


def test_install_cell_does_nothing_where_labecg_is_installed():
    from IPython.core.inputtransformer2 import TransformerManager

    source = install_cell_source("https://github.com/someone/labecg", "abc123")
    assert '%pip install --quiet "labecg @ git+https://github.com/someone/labecg@abc123"' in source
    code = TransformerManager().transform_cell(source)
    calls = []

    class Shell:
        def run_line_magic(self, name, line):
            calls.append((name, line))

    exec(compile(code, "<install cell>", "exec"), {"get_ipython": lambda: Shell()})
    assert calls == []  # labecg is importable here
    exec(compile(code.replace('"labecg"', '"labecg_not_installed_anywhere"'), "<install cell>", "exec"),
         {"get_ipython": lambda: Shell()})
    assert calls == [("pip", 'install --quiet "labecg @ git+https://github.com/someone/labecg@abc123"')]


def test_binder_installs_the_package_with_pyprojects_torch():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in deps if d.startswith("torch"))
    lines = [l.strip() for l in (REPO / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert torch in lines
    post = (REPO / "binder" / "postBuild")
    assert os.access(post, os.X_OK)
    assert "pip install --no-cache-dir -e ." in post.read_text()


def test_config_declares_buttons_and_the_extension_that_completes_them():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert "labecg.sphinx_ext" in config["sphinx"]["config"]["extensions"]
    theme = config["sphinx"]["config"]["html_theme_options"]
    assert theme == {"use_repository_button": True, "use_issues_button": True, "use_edit_page_button": True}
    assert config["sphinx"]["recursive_update"] is True
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert set(config["repository"]) == {"url", "branch"}


def test_extension_completes_the_buttons_or_turns_them_off(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: \"\"\n")
    buttons = {"use_repository_button": True, "use_issues_button": True, "use_edit_page_button": True}
    launch = {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com"}
    config = SimpleNamespace(html_theme_options={"repository_url": "", **buttons, "launch_buttons": launch})
    _sphinx_repository(SimpleNamespace(confdir=str(tmp_path)), config)
    assert config.html_theme_options == {"repository_url": "", "use_repository_button": False,
                                         "use_issues_button": False, "use_edit_page_button": False,
                                         "launch_buttons": {}}
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/labecg.git")
    config = SimpleNamespace(html_theme_options={"repository_url": "", **buttons, "launch_buttons": launch})
    _sphinx_repository(SimpleNamespace(confdir=str(tmp_path)), config)
    assert config.html_theme_options == {"repository_url": "https://github.com/someone/labecg", **buttons,
                                         "launch_buttons": launch}
