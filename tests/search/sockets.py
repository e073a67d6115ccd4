"""The kernel's socket tables, read for the tests that check where Ray listens."""
import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
LOOPBACKS = {LOOPBACK, "::1"}
LISTEN = "0A"


def address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp`` or ``tcp6`` (little-endian 32-bit words) in the usual notation."""
    words = bytes.fromhex(hex_address)
    raw = b"".join(words[i:i + 4][::-1] for i in range(0, len(words), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # an IPv4 address mapped into IPv6
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket, IPv4 and IPv6."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                host, port = fields[1].split(":")
                found[int(fields[9])] = (address(host), int(port, 16))
    return found


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    family, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in family} - family
        family |= new
        grew = bool(new)
    return family


def sockets_of(pids: set[int]) -> dict[int, str]:
    """Socket inode -> the name of the process holding it."""
    out = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out[int(target[8:-1])] = name
        except OSError:
            continue
    return out


def listening_names(root: int) -> dict[str, set[str]]:
    """Address -> the names of the processes under ``root`` (itself included) listening on it."""
    open_ports = listening()
    by_address: dict[str, set[str]] = {}
    for inode, name in sockets_of(descendants(root)).items():
        if inode in open_ports:
            by_address.setdefault(open_ports[inode][0], set()).add(name)
    return by_address
