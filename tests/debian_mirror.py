"""Print the Debian mirror this host's apt uses, for debootstrap.

    python3 tests/debian_mirror.py      # e.g. http://<your mirror>/debian

tests/py39/run and tests/e2e/rootfs build Debian chroots from the mirror the
host already trusts, so they work behind any mirror or proxy and the
repository names no mirror host. $KLG_DEBIAN_MIRROR wins when set. Otherwise
the first enabled `deb` source of the Debian archive in
/etc/apt/sources.list.d/*.list and *.sources (deb822), then
/etc/apt/sources.list: a suite named like Debian's (bookworm, bookworm-updates,
stable, …), not the security archive. Exit 1, saying what to set, when there
is none.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Iterator, List, Optional, Tuple

# Debian's codenames and aliases, with the archive's suffixes; a third-party
# repository ("nodistro", "cloud-sdk-bookworm") does not match.
_SUITE = re.compile(
    r"(buster|bullseye|bookworm|trixie|forky|duke|sid|"
    r"oldoldstable|oldstable|stable|testing|unstable)(-updates|-backports)?"
)

Source = Tuple[str, List[str]]  # (URI, suites)


def one_line_sources(text: str) -> Iterator[Source]:
    """Given a sources.list, yield (URI, [suite]) of its `deb` lines."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=…]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], [words[1]]


def deb822_sources(text: str) -> Iterator[Source]:
    """Given a deb822 .sources file, yield (URI, suites) of each enabled
    stanza of type deb."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []):
            continue
        if fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        for uri in fields.get("uris", []):
            yield uri, fields.get("suites", [])


def host_mirror(apt_dir: str = "/etc/apt") -> Optional[str]:
    """Given apt's configuration directory, return the Debian mirror URI its
    sources use, or None."""
    files = sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.list")))
    files += sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.sources")))
    files.append(os.path.join(apt_dir, "sources.list"))
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        parse = deb822_sources if path.endswith(".sources") else one_line_sources
        for uri, suites in parse(text):
            if any(_SUITE.fullmatch(suite) for suite in suites):
                return uri.rstrip("/")
    return None


def main() -> int:
    mirror = os.environ.get("KLG_DEBIAN_MIRROR") or host_mirror(
        os.environ.get("KLG_APT_DIR", "/etc/apt")
    )
    if not mirror:
        print(
            "no Debian mirror in this host's apt sources (/etc/apt/sources.list.d/*, "
            "/etc/apt/sources.list); set KLG_DEBIAN_MIRROR=http://<mirror>/debian",
            file=sys.stderr,
        )
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
