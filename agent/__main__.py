"""`python -m agent` runs the same CLI as `kube-loopback-guard`."""

from agent.cli import main

raise SystemExit(main())
