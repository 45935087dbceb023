"""The /proc/PID/net parsers, on text as the kernel writes it, and the
reachability rule. The end-to-end case (real namespaces) is in test_shapes.py."""

from __future__ import annotations

import os

from agent.observe.netns import (
    Netns,
    parse_fib_trie,
    parse_if_inet6,
    parse_listening,
    reachable_address,
    read_netns,
    same_netns,
)

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.0
           /24 link UNICAST
        |-- 10.244.1.17
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.1.17
        /32 host LOCAL
"""

IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8c1abfffe123456 02 40 20 80     eth0
fd000000000000000000000000000011 02 40 00 00     eth0
"""

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:192B 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""

TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1A0B 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:20FB 00000000000000000000000000000000:0000 0A
"""


def test_fib_trie_gives_the_pods_own_addresses_without_loopback() -> None:
    assert parse_fib_trie(FIB_TRIE) == ["10.244.1.17"]


def test_if_inet6_gives_global_addresses_only() -> None:
    assert parse_if_inet6(IF_INET6) == ["fd00::11"]


def test_listening_sockets_v4_and_v6() -> None:
    assert parse_listening(TCP, v6=False) == [("0.0.0.0", 6443), ("127.0.0.1", 80)]
    assert parse_listening(TCP6, v6=True) == [("::1", 6667), ("::", 8443)]


def test_reachability() -> None:
    pod = Netns(addresses=("10.244.1.17", "fd00::11"), listening=(("0.0.0.0", 6443),))
    assert reachable_address(pod, 6443)[0] == "10.244.1.17"
    v6_wildcard = Netns(addresses=("10.244.1.17",), listening=(("::", 8443),))
    assert reachable_address(v6_wildcard, 8443)[0] == "10.244.1.17"
    own = Netns(addresses=("10.244.1.17",), listening=(("10.244.1.17", 6443),))
    assert reachable_address(own, 6443)[0] == "10.244.1.17"
    hidden = Netns(addresses=("10.244.1.17",), listening=(("127.0.0.1", 6443),))
    address, why = reachable_address(hidden, 6443)
    assert address is None
    assert "listens only on 127.0.0.1" in why
    assert reachable_address(pod, 443) == (
        None,
        "no socket listens on port 443 in its network namespace",
    )


def test_garbage_is_ignored_not_a_crash() -> None:
    assert parse_fib_trie("|-- not-an-ip\n /32 host LOCAL\n\x00") == []
    assert parse_if_inet6("zz 01 80 00 80 lo\n\n") == []
    assert parse_listening("header\n 0: XYZ:ZZZZ 0:0 0A\n 1: 0100007F\n", v6=False) == []


def test_own_process_shares_our_namespace() -> None:
    assert same_netns(os.getpid()) is True
    assert same_netns(2**22 + 7) is None
    seen = read_netns(os.getpid())
    assert seen is not None
    assert all(":" in a or a.count(".") == 3 for a in seen.addresses)
