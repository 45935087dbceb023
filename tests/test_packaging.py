"""The .deb and the .rpm: built from this checkout, then inspected.

packaging/build-deb and packaging/build-rpm run once per session into a
temporary directory, or, when KLG_PACKAGE_DIST names a directory that already
holds this version's packages, those are inspected instead. Tests skip when
the tools are missing (dpkg-buildpackage/debhelper and the Build-Depends, or
rpmbuild); .ci/run installs them, so in CI they run.

The man page tests need no packaging tools: they run packaging/gen-manpage.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from agent import __version__
from agent.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
NAME = "kube-loopback-guard"
PRIVATE = f"usr/lib/{NAME}"
DIST_ENV = "KLG_PACKAGE_DIST"

DEB_DEPENDS = [
    "python3 (>= 3.9)",
    "python3-psutil",
    "python3-cryptography",
    "python3-sdnotify",
    "python3-yaml",
    "python3 (>= 3.11) | python3-tomli",
]
RPM_REQUIRES = {
    "python3 >= 3.9",
    "python3-psutil",
    "python3-cryptography",
    "python3-sdnotify",
    "python3-pyyaml",
    "(python3-tomli if python3 < 3.11)",
}


def run(*cmd: str, cwd: Optional[Path] = None, timeout: int = 300) -> str:
    result = subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def missing(*tools: str) -> List[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


@functools.cache
def system_python_has_runtime_deps() -> bool:
    """Can /usr/bin/python3 import what the agent imports at start?"""
    if not os.access("/usr/bin/python3", os.X_OK):
        return False
    code = "import psutil, cryptography\ntry:\n import tomllib\nexcept ImportError:\n import tomli"
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True).returncode == 0


def built(kind: str, pattern: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package KIND ("deb" or "rpm"): from KLG_PACKAGE_DIST, or built now."""
    prebuilt = os.environ.get(DIST_ENV)
    if prebuilt:
        found = sorted(Path(prebuilt).glob(pattern))
        assert len(found) == 1, f"{DIST_ENV}={prebuilt}: expected one {pattern}, found {found}"
        return found[0]
    # Under pytest -n, the workers of one run share the parent of their
    # basetemp: the first to get here builds, the others wait and reuse it.
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent
    out = root / f"dist-{kind}"
    with open(root / f"dist-{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            work = Path(tempfile.mkdtemp(prefix=f"dist-{kind}-", dir=root))
            run("bash", str(PACKAGING / f"build-{kind}"), str(work))
            work.rename(out)
    found = sorted(out.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {out}, found {found}"
    return found[0]


# The package builds and lintian take ~10 s: these tests start early.
pytestmark = pytest.mark.slow(seconds=4)


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pattern = f"{NAME}_{__version__}_all.deb"
    if missing("dpkg-deb"):
        pytest.skip("dpkg-deb not installed")
    if not os.environ.get(DIST_ENV):
        absent = missing("dpkg-buildpackage", "dpkg-checkbuilddeps", "dh")
        if absent:
            pytest.skip(f"not installed: {', '.join(absent)} (apt-get install debhelper)")
        unmet = subprocess.run(
            ["dpkg-checkbuilddeps", str(PACKAGING / "debian" / "control")],
            capture_output=True,
            text=True,
        )
        if unmet.returncode != 0:
            pytest.skip(unmet.stderr.strip())
    return built("deb", pattern, tmp_path_factory)


@pytest.fixture(scope="session")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pattern = f"{NAME}-{__version__}-1*.noarch.rpm"
    if missing("rpm", "rpm2archive"):
        pytest.skip("rpm not installed (apt-get install rpm)")
    if not os.environ.get(DIST_ENV):
        if missing("rpmbuild"):
            pytest.skip("rpmbuild not installed (apt-get install rpm)")
        if not system_python_has_runtime_deps():
            pytest.skip(
                "/usr/bin/python3 lacks psutil/cryptography (the man page imports the agent)"
            )
    return built("rpm", pattern, tmp_path_factory)


@pytest.fixture(scope="session")
def deb_tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deb-tree")
    run("dpkg-deb", "-x", str(deb), str(tree))
    return tree


@pytest.fixture(scope="session")
def rpm_tree(rpm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("rpm-tree")
    work = tmp_path_factory.mktemp("rpm-archive")
    copy = work / rpm.name
    shutil.copy(rpm, copy)
    run("rpm2archive", str(copy))
    with tarfile.open(f"{copy}.tgz") as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.12+, and backports
            archive.extractall(tree, filter="data")
        else:
            archive.extractall(tree)
    return tree


def deb_field(deb: Path, field: str) -> str:
    return run("dpkg-deb", "-f", str(deb), field).strip()


def deb_control_file(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-I", str(deb), name)


def deb_paths(deb: Path) -> Dict[str, str]:
    """Path (without the leading ".") -> mode string, from `dpkg-deb -c`."""
    paths = {}
    for line in run("dpkg-deb", "-c", str(deb)).splitlines():
        fields = line.split()
        path = fields[5][1:].rstrip("/") or "/"
        paths[path] = fields[0]
    return paths


def agent_modules() -> List[str]:
    """Every module of the agent package, as a path under agent/ (subpackages included)."""
    return sorted(str(p.relative_to(ROOT / "agent")) for p in (ROOT / "agent").rglob("*.py"))


def run_launcher(tree: Path, *args: str, env: Dict[str, str]) -> str:
    """Run <tree>/usr/bin/kube-loopback-guard as an installed system would.

    Through its own #! line (/usr/bin/python3 -I) when Debian's Python has
    the runtime dependencies, else with this interpreter in isolated mode.
    """
    launcher = tree / "usr" / "bin" / NAME
    cmd = (
        [str(launcher)]
        if system_python_has_runtime_deps()
        else [sys.executable, "-I", str(launcher)]
    )
    result = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, env=env, cwd=env["HOME"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# ---------------------------------------------------------------------------
# one version everywhere (no tools needed)


def test_debian_changelog_carries_the_version() -> None:
    first = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(rf"^{NAME} \(([^)]+)\) ", first)
    assert match, first
    assert match.group(1) == __version__


def test_rpm_spec_carries_the_version() -> None:
    spec = (PACKAGING / "rpm" / f"{NAME}.spec").read_text()
    assert re.search(r"(?m)^Version:\s+(\S+)$", spec).group(1) == __version__  # type: ignore[union-attr]
    changelog = spec.split("\n%changelog\n", 1)[1]
    newest = re.search(r"(?m)^\* .* - (\S+)-\d+$", changelog)
    assert newest and newest.group(1) == __version__


# ---------------------------------------------------------------------------
# man page (no tools needed)


def man_sections(roff: str) -> Dict[str, str]:
    """Plain text per .SH/.SS heading (roff requests dropped, escapes undone)."""
    sections: Dict[str, List[str]] = {"": []}
    current = ""
    for line in roff.splitlines():
        heading = re.match(r"^\.(SH|SS) (.*)$", line)
        if heading:
            current = heading.group(2).replace("\\-", "-")
            sections[current] = []
        elif line.startswith(".SY "):  # a synopsis: .SY command, then its arguments
            sections[current].append(line[4:])
        elif not line.startswith("."):
            sections[current].append(line)
    return {name: man_text("\n".join(lines)) for name, lines in sections.items()}


def man_text(roff: str) -> str:
    """Roff (or --help text) as comparable plain text: `code` and fonts dropped."""
    text = re.sub(r"\\f[BIRP]", "", roff).replace("`", "")
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
    return " ".join(text.split())


def help_options(help_text: str) -> List[str]:
    """Every option string in the options listing of a --help text."""
    options = []
    for line in help_text.splitlines():
        entry = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if entry:
            options += [word.split()[0] for word in entry.group(1).split(", ")]
    return options


def has_option(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def verbs(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no verbs")


@pytest.fixture(scope="module")
def manpage(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("man") / f"{NAME}.1"
    run(sys.executable, str(PACKAGING / "gen-manpage"), "-o", str(out))
    return out.read_text()


def test_manpage_has_every_verb_option_and_description(manpage: str) -> None:
    parser = build_parser()
    sections = man_sections(manpage)
    assert manpage.startswith('.\\"')
    assert f'"{NAME} {__version__}"' in manpage.splitlines()[1]
    for section in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "FILES",
    ):
        assert section in sections, section
    assert man_text(parser.description or "") in sections["DESCRIPTION"]
    top_options = help_options(parser.format_help())
    assert {"-h", "--help", "--version"} <= set(top_options)
    for option in top_options:
        assert has_option(sections["OPTIONS"], option), option
    subs = verbs(parser)
    assert set(subs) <= set(sections), f"verbs without a section: {set(subs) - set(sections)}"
    for name, sub in subs.items():
        text = sections[name]
        options = help_options(sub.format_help())
        assert "--config" in options
        for option in options:
            assert has_option(text, option), f"{name}: {option} missing from the man page"
        assert man_text(sub.description or "") in text, name
        assert f"{NAME} {name}" in sections["SYNOPSIS"]


def test_manpage_help_texts_match(manpage: str) -> None:
    """Each option's help, as --help prints it, is in the verb's section."""
    sections = man_sections(manpage)
    for name, sub in verbs(build_parser()).items():
        for action in sub._actions:
            if action.help and action.help != argparse.SUPPRESS:
                expanded = sub._get_formatter()._expand_help(action)
                assert man_text(expanded) in sections[name], (name, action.option_strings)


def test_manpage_documents_config_exit_codes_metrics_and_journal(manpage: str) -> None:
    """What the page generates from the code is all there: it cannot drift."""
    from agent.config.schema import SCHEMA
    from agent.config.values import KINDS, choices_of
    from agent.report.events import JOURNAL_FIELDS, MESSAGE_IDS
    from agent.report.metrics import HELP, PREFIX
    from agent.usage import EXIT_CONFIG, EXIT_USAGE

    sections = man_sections(manpage)
    for section in ("CONFIGURATION", "METRICS", "JOURNAL", "ENVIRONMENT", "EXAMPLES"):
        assert section in sections, section

    def whole(section: str) -> str:  # with its .SS subsections
        return man_text(manpage.split(f".SH {section}\n", 1)[1].split(".SH ", 1)[0])

    config = whole("CONFIGURATION")
    for table in SCHEMA:
        if table.name:
            assert (f"[[{table.name}]]" if table.array else f"[{table.name}]") in config
        for option in table.options:
            assert man_text(option.description) in config, (table.name, option.key)
    spec = importlib.util.spec_from_loader("gen_manpage", loader=None)
    assert spec is not None
    generator = importlib.util.module_from_spec(spec)
    generator.__file__ = str(PACKAGING / "gen-manpage")
    exec((PACKAGING / "gen-manpage").read_text(), generator.__dict__)
    assert set(generator.KIND_TEXT) == {kind for kind in KINDS if choices_of(kind) is None}
    exits = sections["EXIT STATUS"]
    for code in (0, 1, 2, 3, EXIT_USAGE, EXIT_CONFIG):
        assert re.search(rf"(^| ){code} ", exits), code
    for name, text in HELP.items():
        assert f"{PREFIX}{name} {man_text(text)}" in sections["METRICS"]
    for message_id in MESSAGE_IDS.values():
        assert message_id in whole("JOURNAL")
    for field in JOURNAL_FIELDS:
        assert has_option(whole("JOURNAL"), field), field


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed")
def test_manpage_renders_without_warnings(manpage: str, tmp_path: Path) -> None:
    page = tmp_path / f"{NAME}.1"
    page.write_text(manpage)
    result = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "80", "MAN_DISABLE_SECCOMP": "1"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert "--expires-in DURATION" in result.stdout


# ---------------------------------------------------------------------------
# the .deb


def test_deb_control(deb: Path) -> None:
    assert deb.name == f"{NAME}_{__version__}_all.deb"
    assert deb_field(deb, "Package") == NAME
    assert deb_field(deb, "Version") == __version__
    assert deb_field(deb, "Architecture") == "all"
    assert [d.strip() for d in deb_field(deb, "Depends").split(",")] == DEB_DEPENDS


def test_deb_contents(deb: Path) -> None:
    paths = deb_paths(deb)
    unit = [
        p
        for p in (f"/lib/systemd/system/{NAME}.service", f"/usr/lib/systemd/system/{NAME}.service")
        if p in paths
    ]
    assert len(unit) == 1, "the unit, in /lib/systemd/system (Debian 12) or /usr/lib/systemd/system"
    for path in (
        f"/usr/bin/{NAME}",
        f"/etc/{NAME}/config.toml",
        f"/usr/lib/systemd/catalog/{NAME}.catalog",
        f"/usr/share/man/man1/{NAME}.1.gz",
        f"/usr/share/doc/{NAME}/copyright",
        f"/usr/share/doc/{NAME}/changelog.gz",
        f"/usr/share/doc/{NAME}/README.md",
        f"/usr/share/python3/runtime.d/{NAME}.rtupdate",
        f"/usr/share/{NAME}/{NAME}.rules.yml",
        f"/usr/share/{NAME}/{NAME}.prometheusrule.yaml",
    ):
        assert path in paths, path
    assert paths[f"/usr/bin/{NAME}"] == "-rwxr-xr-x"
    prefix = f"/{PRIVATE}/agent/"
    modules = sorted(p[len(prefix) :] for p in paths if p.startswith(prefix) and p.endswith(".py"))
    assert modules == agent_modules()
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc") or "/tests" in p]
    # systemd creates the state directory (StateDirectory=), not the package.
    assert not [p for p in paths if p.startswith("/var")]


def test_deb_conffile_and_payload_are_the_sources(deb: Path, deb_tree: Path) -> None:
    assert deb_control_file(deb, "conffiles").split() == [f"/etc/{NAME}/config.toml"]
    shipped = {
        f"etc/{NAME}/config.toml": "examples/config.toml",
        f"usr/lib/systemd/catalog/{NAME}.catalog": f"systemd/{NAME}.catalog",
        f"usr/share/doc/{NAME}/README.md": "README.md",
        f"usr/share/{NAME}/{NAME}.rules.yml": f"packaging/prometheus/{NAME}.rules.yml",
        f"usr/share/{NAME}/{NAME}.prometheusrule.yaml": (
            f"packaging/prometheus/{NAME}.prometheusrule.yaml"
        ),
    }
    unit = next(deb_tree.glob(f"*lib/systemd/system/{NAME}.service"))
    assert unit.read_bytes() == (ROOT / "systemd" / f"{NAME}.service").read_bytes()
    for installed, source in shipped.items():
        assert (deb_tree / installed).read_bytes() == (ROOT / source).read_bytes(), installed
    for module in agent_modules():
        assert (deb_tree / PRIVATE / "agent" / module).read_bytes() == (
            ROOT / "agent" / module
        ).read_bytes()


def test_deb_maintainer_scripts(deb: Path) -> None:
    postinst = deb_control_file(deb, "postinst")
    assert "journalctl --update-catalog" in postinst
    assert f"py3compile -p {NAME} /{PRIVATE}" in postinst
    assert f"deb-systemd-helper enable '{NAME}.service'" in postinst
    assert f"deb-systemd-invoke $_dh_action '{NAME}.service'" in postinst  # start / restart
    assert f"py3clean -p {NAME}" in deb_control_file(deb, "prerm")
    postrm = deb_control_file(deb, "postrm")
    assert f"rm -rf /var/lib/{NAME}" in postrm
    assert f"deb-systemd-helper purge '{NAME}.service'" in postrm


def test_deb_payload_runs_from_its_own_tree(deb_tree: Path, tmp_path: Path) -> None:
    # A decoy `agent` where only a careless launcher would look: the working
    # directory and PYTHONPATH (the launcher runs python3 -I).
    decoy = tmp_path / "agent"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('imported the decoy agent')\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(tmp_path),
    }
    assert run_launcher(deb_tree, "--version", env=env).strip() == f"{NAME} {__version__}"
    # The shipped conffile (examples/config.toml; tests/test_config.py keeps it
    # equal to `config --example`) is valid for the shipped code.
    checked = run_launcher(
        deb_tree, "config", "--config", str(deb_tree / "etc" / NAME / "config.toml"), env=env
    )
    assert checked.startswith("configuration OK")
    assert not list((deb_tree / PRIVATE).rglob("__pycache__")), "the launcher wrote byte-code"


def test_deb_manpage_is_the_generated_one(deb_tree: Path, manpage: str) -> None:
    packaged = gzip.decompress(
        (deb_tree / "usr/share/man/man1" / f"{NAME}.1.gz").read_bytes()
    ).decode()
    # Only the date on the .TH line may differ (SOURCE_DATE_EPOCH).
    strip_date = re.compile(r'(?m)^(\.TH \S+ 1) "[^"]*"')
    assert strip_date.sub(r"\1", packaged) == strip_date.sub(r"\1", manpage)


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed")
def test_lintian_reports_no_errors_or_warnings(deb: Path) -> None:
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(deb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------
# the .rpm


def rpm_query(rpm: Path, *args: str) -> str:
    return run("rpm", "-qp", *args, str(rpm))


def test_rpm_header(rpm: Path) -> None:
    header = rpm_query(rpm, "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}")
    name, version, release, arch = header.split()
    assert (name, version, arch) == (NAME, __version__, "noarch")
    assert re.match(r"^1(\.|$)", release), release  # 1, or 1.el9 where %dist is set
    assert rpm_query(rpm, "--qf", "%{LICENSE}") == "Apache-2.0"


def test_rpm_requires(rpm: Path) -> None:
    requires = {line.strip() for line in rpm_query(rpm, "-R").splitlines()}
    assert requires >= RPM_REQUIRES, RPM_REQUIRES - requires
    python_requires = {r for r in requires if "python" in r} - {"/usr/bin/python3"}
    assert python_requires == RPM_REQUIRES


def test_rpm_files_and_config(rpm: Path) -> None:
    files = set(rpm_query(rpm, "-l").split())
    for path in (
        f"/usr/bin/{NAME}",
        f"/usr/lib/systemd/system/{NAME}.service",
        f"/usr/lib/systemd/catalog/{NAME}.catalog",
        f"/etc/{NAME}/config.toml",
        f"/usr/share/doc/{NAME}/README.md",
        f"/usr/share/licenses/{NAME}/LICENSE",
        f"/usr/share/{NAME}/{NAME}.rules.yml",
        f"/usr/share/{NAME}/{NAME}.prometheusrule.yaml",
    ):
        assert path in files, path
    assert [p for p in files if p.startswith(f"/usr/share/man/man1/{NAME}.1")]
    prefix = f"/{PRIVATE}/agent/"
    modules = sorted(p[len(prefix) :] for p in files if p.startswith(prefix) and p.endswith(".py"))
    assert modules == agent_modules()
    assert not [p for p in files if p.startswith("/var") or "/tests" in p]
    flags = rpm_query(rpm, "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]").splitlines()
    assert f"cn /etc/{NAME}/config.toml" in flags  # %config(noreplace)
    assert [line for line in flags if line.startswith("c")] == [f"cn /etc/{NAME}/config.toml"]


def test_rpm_scriptlets(rpm: Path) -> None:
    scripts = rpm_query(rpm, "--scripts")
    parts = re.split(r"(?m)^(\w+) scriptlet.*:$", scripts)
    by_name = dict(zip(parts[1::2], parts[2::2]))
    unit = f"{NAME}.service"
    # Either systemd-rpm-macros' expansion (EL9/Fedora) or the spec's fallback.
    assert re.search(rf"(preset|install-system-units) {unit}", by_name["postinstall"])
    assert "journalctl --update-catalog" in by_name["postinstall"]
    assert re.search(rf"(disable --now|remove-system-units) {unit}", by_name["preuninstall"])
    assert re.search(rf"(try-restart|mark-restart-system-units) {unit}", by_name["postuninstall"])


def test_rpm_payload_runs_and_matches_the_deb(
    rpm_tree: Path, deb_tree: Path, tmp_path: Path
) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    assert run_launcher(rpm_tree, "--version", env=env).strip() == f"{NAME} {__version__}"
    same = [
        f"usr/bin/{NAME}",
        f"etc/{NAME}/config.toml",
        f"usr/lib/systemd/catalog/{NAME}.catalog",
        *(f"{PRIVATE}/agent/{m}" for m in agent_modules()),
    ]
    for path in same:
        assert (rpm_tree / path).read_bytes() == (deb_tree / path).read_bytes(), path
    assert (rpm_tree / f"usr/lib/systemd/system/{NAME}.service").read_bytes() == (
        ROOT / "systemd" / f"{NAME}.service"
    ).read_bytes()
