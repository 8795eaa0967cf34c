"""Hosts on one private subnet, each a network namespace joined to a bridge by a veth pair.

The bridge lives in a namespace of its own (the "switch"): frames it forwards meet that
namespace's empty firewall, not this machine's (Docker's FORWARD policy drops bridged
traffic). The test process stays in the root namespace and reaches every host through one
more veth pair into the switch, holding the subnet's first address. Names start with
``sr<pid>`` so two runs on one machine never meet, and the subnet is a 10.x.y.0/24 no route
here covers yet. ``close()`` deletes every namespace and per-namespace file made here,
whatever state the run left behind (the links go with their namespaces).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# ``ip netns exec <ns>`` bind-mounts the files found here over /etc in a private mount
# namespace: how a host gets its own /etc/hosts.
NETNS_ETC = Path("/etc/netns")


class NetworkUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2, no veth or bridge support)."""


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2)"
    # Everything a Network makes, once: a container may allow namespaces but not veth pairs.
    probe = f"sr{os.getpid()}-probe"
    steps = [
        ["netns", "add", probe],
        ["-n", probe, "link", "add", "br0", "type", "bridge"],
        ["link", "add", f"sr{os.getpid()}pr", "type", "veth", "peer", "name", "p", "netns", probe],
    ]
    try:
        for step in steps:
            result = subprocess.run(["ip", *step], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                return f"ip {' '.join(step)} failed: {result.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)  # the veth pair goes with it
    return None


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no address or route on this machine, picked from ``seed``."""
    taken = [
        ipaddress.ip_network(word, strict=False)
        for line in (_ip("-4", "route", "show", "table", "all") + _ip("-4", "addr")).splitlines()
        for word in line.split()
        if word[:1].isdigit() and word.count(".") == 3
    ]
    for step in range(256 * 256):
        n = (seed + step) % (256 * 256)
        subnet = ipaddress.IPv4Network(f"10.{n // 256}.{n % 256}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise NetworkUnavailable("no free 10.x.y.0/24 on this machine")


@dataclass
class Host:
    """One network namespace with one address."""

    name: str  # the role, e.g. "gw1"; the namespace is ``netns``
    netns: str
    address: str
    link: str  # the veth end on the bridge

    def command(self, *args: str) -> list[str]:
        """``args`` run inside this host's namespace (``ip netns exec`` execs, keeping the PID)."""
        return ["ip", "netns", "exec", self.netns, *args]

    def write_hosts(self, entries: dict[str, str]) -> None:
        """This host's /etc/hosts (name -> address), seen by processes started after the first
        write; later writes go to the same file, which lookups read afresh each time."""
        path = NETNS_ETC / self.netns / "hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{a} {n}" for n, a in sorted(entries.items()))]
        with path.open("w") as file:  # in place: a bind mount holds the inode
            file.write("\n".join(lines) + "\n")


@dataclass
class Network:
    """A bridge on a private /24 and the hosts joined to it; ``close()`` undoes all of it."""

    prefix: str = field(default_factory=lambda: f"sr{os.getpid()}")
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    _next_address: int = 2
    _links: int = 0

    @property
    def switch(self) -> str:
        """The namespace holding the bridge."""
        return f"{self.prefix}-switch"

    @property
    def gateway(self) -> str:
        """The test process's address on the subnet: where it meets the hosts."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def open(self) -> Network:
        self.subnet = self.subnet or free_subnet(os.getpid())
        uplink = f"{self.prefix}up"
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            _ip(
                "link",
                "add",
                uplink,
                "type",
                "veth",
                "peer",
                "name",
                "uplink",
                "netns",
                self.switch,
            )
            _ip("-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", uplink)
            _ip("link", "set", uplink, "up")
        except RuntimeError as exc:
            self.close()
            raise NetworkUnavailable(str(exc)) from exc
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace ``<prefix>-<name>`` with the next free address of the subnet."""
        assert self.subnet is not None, "open() first"
        netns = f"{self.prefix}-{name}"
        address = str(self.subnet.network_address + self._next_address)
        self._next_address += 1
        self._links += 1
        link = f"v{self._links}"
        host = self.hosts[name] = Host(name, netns, address, link)
        _ip("netns", "add", netns)
        switch = ["-n", self.switch, "link"]
        _ip(*switch, "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip(*switch, "set", link, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        return host

    def remove_host(self, name: str) -> None:
        """Delete the host's namespace (its veth pair goes with it). Stop its processes first."""
        host = self.hosts.pop(name)
        _ip("netns", "del", host.netns, check=False)
        shutil.rmtree(NETNS_ETC / host.netns, ignore_errors=True)

    def close(self) -> None:
        for name in list(self.hosts):
            self.remove_host(name)
        # The bridge, every veth end on it and the uplink's pair go with the switch.
        _ip("netns", "del", self.switch, check=False)
