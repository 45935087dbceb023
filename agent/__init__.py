"""kube-loopback-guard: watch kube-apiserver's in-memory loopback certificate.

The version here is the single source of truth: pyproject.toml and the
packages read it.
"""

__version__ = "0.1.0"
