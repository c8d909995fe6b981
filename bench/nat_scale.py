"""Adding one VM's port forward to a node's nftables map: 10 entries vs 10,000.

The map holds `size` forwards (filled with one NftablesFirewall.rebuild), then
we time NftablesFirewall.apply(None, vm) for a VM with one TCP forward (what
create/set_net does), N times, removing it again (untimed) after each.

    .venv/bin/python bench/nat_scale.py [--n 50]

Runs as root against the real kernel, in its own table `tt_bench_nat`, dropped
on exit. The table's rules are live while it runs, so its public ports are
chosen where no TCP socket listens and no node's port range lies (40000+).
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import _common as c

from engines.network.nftables import NftablesFirewall
from engines.specs import PortSpec, TemplateSpec, VmSpec

TABLE = "tt_bench_nat"
SIZES = (10, 10_000)
TARGET = 1.5
FIRST_PORT = 40000
TEMPLATE = TemplateSpec(name="bench", path="bench.qcow2")


def listening_tcp_ports() -> set[int]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def free_ports(count: int) -> list[int]:
    busy = listening_tcp_ports()
    ports = [p for p in range(FIRST_PORT, 65536) if p not in busy][:count]
    if len(ports) < count:
        raise RuntimeError(f"only {len(ports)} free TCP ports from {FIRST_PORT}")
    return ports


def vm(index: int, public_port: int) -> VmSpec:
    net = ipaddress.IPv4Network(c.NODE["vm_network"])
    return VmSpec(
        id=index, name=f"tt-bench-nat-{index}", template=TEMPLATE, cpu_num=1, mem_mb=128, disk_mb=64,
        mac="", ip=str(net.network_address + 2 + index),
        ports=(PortSpec("tcp", 80, public_port),),
    )


def fwd_count(fw: NftablesFirewall) -> int:
    return len(fw.listing().get("fwd_tcp", []))


def run(n: int) -> None:
    c.header(f"nat_scale: add one port forward, map of {SIZES[0]} vs {SIZES[1]} entries, N={n}")
    fw = NftablesFirewall(vm_network=c.NODE["vm_network"], bridge=c.NODE["bridge"], table=TABLE)
    ports = free_ports(max(SIZES) + n)
    filled, extra = ports[: max(SIZES)], ports[max(SIZES):]
    samples: dict[int, list[float]] = {}
    with c.Cleanup() as cleanup:
        cleanup.add("drop nft table", c.drop_nft_table, TABLE)
        fw.ensure()
        for size in SIZES:
            t = time.perf_counter()
            fw.rebuild([vm(i, filled[i]) for i in range(size)])
            fill = time.perf_counter() - t
            assert fwd_count(fw) == size, f"map holds {fwd_count(fw)}, not {size}"
            times = []
            for k in range(n):
                new = vm(max(SIZES) + k, extra[k])
                t = time.perf_counter()
                fw.apply(None, new)
                times.append(time.perf_counter() - t)
                fw.apply(new, None)
            assert fwd_count(fw) == size
            samples[size] = times
            print(f"  map of {size:>6} entries (filled in {c.ms(fill).strip()}): "
                  f"{c.summary('add one forward', times)}")
    small, large = (c.median(samples[s]) for s in SIZES)
    print(f"  {c.verdict(f'ratio of medians {SIZES[1]}/{SIZES[0]}', large / small, TARGET)}")
    print(f"  ratio of p95 {SIZES[1]}/{SIZES[0]} = {c.p95(samples[SIZES[1]]) / c.p95(samples[SIZES[0]]):.3f}")


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--n", type=int, default=50, help="additions timed per map size (default 50)")
    args = parser.parse_args()
    c.require_root()
    run(args.n)


if __name__ == "__main__":
    main()
