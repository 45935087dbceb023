"""The configuration schema: every key, its type, default and meaning.

This is the one place options are documented. `agent.config` validates
against it, `agent.config.example` writes the sample config shipped as
/etc/kube-loopback-guard/config.toml from it (a test keeps the two in step),
and packaging/gen-manpage the man page.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from agent.record import dataclass

# A default as it is written in TOML: str, int, bool or a list of str.
Default = Union[str, int, bool, Tuple[str, ...]]


@dataclass(frozen=True)
class Option:
    """One configuration key: its kind, default and the text that documents it."""

    key: str
    kind: str  # see agent.config_values.KINDS
    default: Default
    description: str
    # Shown in the sample instead of the default (tables that are off by default).
    example: Optional[Default] = None
    required: bool = False


@dataclass(frozen=True)
class Table:
    """A TOML table; `array` for [[name]] tables (one entry per item)."""

    name: str
    description: str
    options: tuple[Option, ...]
    array: bool = False
    # For array tables: how many entries the default config has (0 or 1).
    default_entries: int = 0
    # A plain table whose presence switches something on ([restart.lease]).
    optional: bool = False

    @property
    def parent(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def key(self) -> str:
        return self.name.rpartition(".")[2]


TOP = Table(
    name="",
    description="kube-loopback-guard configuration.",
    options=(
        Option(
            "interval",
            "interval",
            "5m",
            "How often the daemon (`run`) checks every target (1s to 1d).",
        ),
        Option(
            "state_dir",
            "path",
            "/var/lib/kube-loopback-guard",
            "Where the daemon keeps what it last saw (StateDirectory= in the unit).",
        ),
    ),
)

THRESHOLDS = Table(
    name="thresholds",
    description="When the time left on the loopback certificate turns a state.",
    options=(
        Option(
            "warning",
            "threshold",
            "60d",
            "WARNING when less than this is left (at most 3650d).",
        ),
        Option(
            "critical",
            "threshold",
            "14d",
            "CRITICAL when less than this is left; must be shorter than warning.",
        ),
    ),
)

TARGETS = Table(
    name="targets",
    description=(
        "One [[targets]] table per apiserver to watch. Without any, the default\n"
        'target below (kind "auto", nothing pinned) stands for every apiserver\n'
        'found on the node, of every shape (README, "Distributions").'
    ),
    array=True,
    default_entries=1,
    options=(
        Option(
            "name",
            "name",
            "kube-apiserver",
            "Unique name, used in output, metrics labels and the journal.",
        ),
        Option(
            "process_name",
            "string",
            "kube-apiserver",
            "Process to find (/proc/PID/comm or argv[0]); empty = do not look for one.",
        ),
        Option(
            "kind",
            "target-kind",
            "auto",
            'The apiserver\'s shape: "auto" (recognised from the process; with no\n'
            'process_name, host or port set, every apiserver on the node), "kubeadm"\n'
            '(also RKE2 and binary installs), "k3s", "microk8s", "k0s", "openshift",\n'
            '"aggregated" or "pod" (an apiserver in another network namespace).',
        ),
        Option(
            "aggregated",
            "process-names",
            ("openshift-apiserver",),
            "Process names of aggregated apiservers (built on k8s.io/apiserver, each\n"
            "with its own loopback certificate) that auto discovery watches too.",
        ),
        Option(
            "host",
            "host",
            "",
            "Address to probe; empty = the process's --bind-address,\n"
            "or 127.0.0.1 when that is absent or a wildcard.",
        ),
        Option(
            "port",
            "port",
            0,
            "Port to probe; 0 = the process's --secure-port, else 6443.",
        ),
        Option(
            "server_name",
            "string",
            "apiserver-loopback-client",
            "TLS SNI that makes the apiserver serve its loopback certificate.",
        ),
        Option(
            "timeout",
            "probe-timeout",
            "5s",
            "Deadline for the whole probe (connect, TLS handshake, /livez read).",
        ),
        Option(
            "lifetime",
            "lifetime",
            "auto",
            'Certificate lifetime assumed when only the process start time is known:\n"auto" '
            "(the lifetime learned from the last probe of the same process, else\n"
            '365 days, the shortest upstream lifetime) or a duration such as "1096d"\n'
            "(at most 36500d).",
        ),
    ),
)

METRICS = Table(
    name="metrics",
    description="Prometheus node_exporter textfile collector output.",
    options=(
        Option(
            "textfile",
            "metrics-file",
            "",
            "File written atomically after every check of the daemon, e.g.\n"
            "/var/lib/node_exporter/textfile_collector/kube_loopback_guard.prom;\n"
            '"" (the default) writes none. The name must end in ".prom".',
        ),
    ),
)

RESTART = Table(
    name="restart",
    description=(
        "Controlled restart of the apiserver inside a maintenance window (off by\n"
        'default: monitoring only). See README, "Restarting safely".'
    ),
    options=(
        Option("enabled", "bool", False, "Restart at all; false = monitoring only."),
        Option("dry_run", "bool", False, "Decide and log, never act."),
        Option(
            "method",
            "restart-method",
            "systemd",
            'How to restart: "systemd" (restart `unit`), "static-pod" (crictl stop the\n'
            'container, or SIGTERM the process; kubelet starts a new one), "command",\n'
            '"signal" (SIGTERM the verified PID, for supervisors that respawn it, as\n'
            'k0s does) or "auto" (the shape\'s way: k3s → unit k3s, MicroK8s → unit\n'
            "snap.microk8s.daemon-kubelite, k0s → signal, kubeadm/RKE2/OpenShift →\n"
            'static-pod; an apiserver in a pod is never restarted: "not-restartable").',
        ),
        Option("unit", "string", "kube-apiserver.service", "The unit, for method systemd."),
        Option(
            "runtime_endpoint",
            "string",
            "",
            "For method static-pod: the CRI endpoint passed to crictl as --runtime-endpoint,\n"
            'e.g. "unix:///run/containerd/containerd.sock"; empty = crictl\'s own default\n'
            "(/etc/crictl.yaml). The kubelet must be running, or the restart is refused.",
        ),
        Option(
            "command",
            "argv",
            (),
            'For method command: argv, no shell, e.g. ["/usr/local/sbin/restart-apiserver"];\n'
            "it gets KLG_TARGET, KLG_PID, KLG_NOT_AFTER in its environment.",
        ),
        Option(
            "targets",
            "target-names",
            (),
            "Names of the [[targets]] this restarts; empty = every target.",
        ),
        Option(
            "before_expiry",
            "threshold",
            "90d",
            "Due when less than this is left on the loopback certificate (at most 3650d).\n"
            "Longer than thresholds.critical (refused otherwise); by default longer than\n"
            "thresholds.warning too, so a guarded apiserver is restarted before anyone\n"
            'is warned and WARNING keeps meaning "a person must act".',
        ),
        Option(
            "min_interval",
            "min-interval",
            "24h",
            "Never two restarts of a target closer than this (at least 1h).",
        ),
        Option(
            "when_expired",
            "when-expired",
            "immediately",
            'Once expired the outage has begun: "immediately" restarts at once,\n'
            '"window" still waits for a window.',
        ),
        Option(
            "random_delay",
            "random-delay",
            "0s",
            "Delay into the window, the same on every check for this node and window\n"
            "(spreads masters that share a window; at most half the window and 1d).",
        ),
        Option(
            "ready_timeout",
            "ready-timeout",
            "5m",
            "Deadline for the new apiserver: new process, later certificate, /readyz ok.",
        ),
        Option(
            "command_timeout",
            "ready-timeout",
            "2m",
            "Deadline for each command run: hooks, blocking_command, systemctl, crictl.",
        ),
        Option(
            "peers",
            "peer-urls",
            (),
            'Other apiservers, e.g. ["https://10.0.0.12:6443", "https://10.0.0.13:6443"];\n'
            "each GET /readyz must answer ok before a restart.",
        ),
        Option(
            "peer_ca",
            "optional-path",
            "",
            "CA file to verify peers without credentials; empty = no verification.",
        ),
        Option(
            "peer_kubeconfig",
            "optional-path",
            "",
            "Kubeconfig whose CA and credentials ask the peers' /readyz (which must\n"
            "answer ok); empty = [restart.lease] kubeconfig when a lease is configured,\n"
            "else none: without credentials a peer answering 401/403 (anonymous access\n"
            "off) counts as serving, its readiness not visible.",
        ),
        Option(
            "blocking_command",
            "argv",
            (),
            "argv; a non-zero exit blocks the restart (like kured's blockers).",
        ),
        Option("pre_hook", "argv", (), "argv run before the restart; non-zero aborts it."),
        Option(
            "post_hook",
            "argv",
            (),
            "argv run after, with KLG_OUTCOME (succeeded/failed) and details in env.",
        ),
    ),
)

RESTART_WINDOWS = Table(
    name="restart.windows",
    description=(
        "Maintenance windows; restarts happen only inside one (unless expired\n"
        'with when_expired "immediately"). At least one is required when enabled.\n'
        "A window over midnight belongs to the day it starts (unlike kured, whose\n"
        "window belongs to the current weekday)."
    ),
    array=True,
    default_entries=0,
    options=(
        Option(
            "days",
            "days",
            (),
            'Days on which the window STARTS: "mon" … "sun".',
            example=("sat", "sun"),
            required=True,
        ),
        Option("start", "string", "", "Local start time, HH:MM.", example="02:00", required=True),
        Option(
            "end",
            "string",
            "",
            'Local end time, HH:MM or "24:00"; before start = crosses midnight;\n'
            'equal to start is refused (a whole day is "00:00" to "24:00").',
            example="04:00",
            required=True,
        ),
        Option(
            "timezone",
            "string",
            "UTC",
            "IANA time zone of start and end.",
            example="Europe/Berlin",
        ),
    ),
)

RESTART_LEASE = Table(
    name="restart.lease",
    description=(
        "Optional: one master at a time, cluster-wide, through a\n"
        "coordination.k8s.io/v1 Lease (RBAC in README). Released after a verified\n"
        "restart; after a failed one it is kept (and renewed) until this apiserver\n"
        "is verified healthy, or `kube-loopback-guard lease release`. Its kubeconfig\n"
        "also asks the peers' /readyz unless [restart] peer_kubeconfig is set."
    ),
    optional=True,
    options=(
        Option(
            "kubeconfig",
            "path",
            "/etc/kubernetes/admin.conf",
            "Kubeconfig naming the API server, its CA and our credentials.",
        ),
        Option("namespace", "name", "kube-system", "Namespace of the Lease."),
        Option("name", "name", "kube-loopback-guard", "Name of the Lease."),
        Option(
            "duration",
            "lease-duration",
            "15m",
            "leaseDurationSeconds: another master takes over a lease left by a dead\n"
            "agent once it has stayed unchanged this long (at most 1d).",
        ),
        Option(
            "identity",
            "string",
            "",
            "holderIdentity; empty = this node's host name.",
        ),
    ),
)

SCHEMA: tuple[Table, ...] = (
    TOP,
    THRESHOLDS,
    METRICS,
    TARGETS,
    RESTART,
    RESTART_WINDOWS,
    RESTART_LEASE,
)


def table_named(name: str) -> Table:
    return next(t for t in SCHEMA if t.name == name)


def children_of(table: Table) -> tuple[Table, ...]:
    return tuple(t for t in SCHEMA if t.name and t is not table and t.parent == table.name)
