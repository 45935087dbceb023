"""`reload`: validate the configuration, then ask the running daemon to re-read it.

The unit's `ExecReload=` runs this, so `systemctl reload` fails, and says why,
on a configuration the daemon would reject, instead of reporting "Reloaded"
while the old one stays; and it needs no /bin/kill (procps is not on a
minimal Debian). systemd gives control processes the daemon's PID in
$MAINPID.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Mapping, Optional

from agent.config.loader import DEFAULT_CONFIG_PATH, ConfigError, load_config
from agent.report.events import PRIORITY_ERR, EventKind, send_event
from agent.report.journal import Journal

# sysexits.h EX_CONFIG, as `run` and `config` use it.
EXIT_CONFIG = 78
# The configuration is fine but there is no daemon to tell, or it is gone.
EXIT_NOT_SIGNALLED = 1


def reload_daemon(
    config_path: Optional[str],
    pid: Optional[int],
    journal: Journal,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """Given the --config path, the daemon's PID (None: $MAINPID), a journal
    and the environment, validate the configuration and send SIGHUP to the
    daemon; return 0 once signalled, EXIT_CONFIG when the configuration is
    invalid (the daemon is not disturbed; the rejection is in the journal as
    the daemon would record it), EXIT_NOT_SIGNALLED when there is no daemon.
    """
    environ = os.environ if environ is None else environ
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print("kube-loopback-guard: invalid configuration, not reloaded:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        send_event(
            journal,
            EventKind.CONFIG_REJECTED,
            PRIORITY_ERR,
            "configuration rejected, the previous one stays in force: " + "; ".join(error.problems),
            CONFIG_FILE=config_path or DEFAULT_CONFIG_PATH,
        )
        return EXIT_CONFIG
    if pid is None:
        text = environ.get("MAINPID", "")
        if not text.isdigit():
            print(
                "kube-loopback-guard: configuration OK, but no daemon to reload: $MAINPID is "
                "not set (systemctl reload sets it); give --pid PID",
                file=sys.stderr,
            )
            return EXIT_NOT_SIGNALLED
        pid = int(text)
    if pid <= 1:
        print(f"kube-loopback-guard: refusing to signal PID {pid}", file=sys.stderr)
        return EXIT_NOT_SIGNALLED
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as error:
        print(
            f"kube-loopback-guard: configuration OK, but cannot signal PID {pid}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return EXIT_NOT_SIGNALLED
    where = config.path or f"built-in defaults ({DEFAULT_CONFIG_PATH} is absent)"
    print(f"configuration OK: {where}; asked PID {pid} to reload it")
    return 0
