# Shared by packaging/build-deb and packaging/build-rpm (sourced, not run).
#
# Both packages are built from the same staged copy of the sources, and both
# take their version from agent/__init__.py (__version__), the single source of
# truth. The files that also carry it (debian/changelog, the spec's Version: and
# %changelog) are checked against it, never silently rewritten.

set -euo pipefail

# Build with the distribution's tools and Python, whatever the caller's shell
# had (an activated virtualenv would otherwise supply `python3`).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
export LC_ALL=C.UTF-8 TZ=UTC

KLG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KLG_NAME=kube-loopback-guard

die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# __version__ from agent/__init__.py, read without importing the package.
klg_version() {
    local version
    version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$KLG_ROOT/agent/__init__.py")
    [ -n "$version" ] || die "no __version__ = \"...\" line in agent/__init__.py"
    printf '%s\n' "$version"
}

# Copy what the packages are built from into DEST (a fresh directory). Both
# builds use this one list; tests/ and the development files are left out.
stage_sources() {
    local dest=$1
    mkdir -p "$dest/agent" "$dest/systemd" "$dest/examples" "$dest/packaging/prometheus"
    (cd "$KLG_ROOT" && find agent -name '*.py' -print0 | xargs -0 cp -p --parents -t "$dest")
    cp -p "$KLG_ROOT/systemd/$KLG_NAME.service" "$KLG_ROOT/systemd/$KLG_NAME.catalog" "$dest/systemd/"
    cp -p "$KLG_ROOT/examples/config.toml" "$dest/examples/"
    cp -p "$KLG_ROOT/packaging/gen-manpage" "$KLG_ROOT/packaging/$KLG_NAME.launcher" "$dest/packaging/"
    cp -p "$KLG_ROOT/packaging/prometheus/$KLG_NAME.rules.yml" \
        "$KLG_ROOT/packaging/prometheus/$KLG_NAME.prometheusrule.yaml" "$dest/packaging/prometheus/"
    cp -p "$KLG_ROOT/README.md" "$KLG_ROOT/LICENSE" "$dest/"
}

# Where the packages go: the first argument, else dist/ in the checkout.
out_dir() {
    local dir=${1:-$KLG_ROOT/dist}
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}
