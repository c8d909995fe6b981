"""Adding one VM's elements to a node's nftables tables: 10 VMs vs 10,000.

The tables hold `size` VMs' elements (filled with one NftablesFirewall.rebuild):
a TCP forward each in the `ip` table's map, and each one's isolation elements
in the `bridge` table (its port, MAC and address; its Env; who may reach it).
Then, N times each, we time adding one more VM's port forward, and one more
VM's isolation elements (what create/set_net does, one `nft -f` transaction
each), removing them again (untimed) after each.

    .venv/bin/python bench/nat_scale.py [--n 50] [--quick]

(--quick: 10 additions per size, for bench/all.py.)

Runs as root against the real kernel, in its own table `tt_bench_nat`, dropped
on exit (both families). The table's rules are live while it runs, so its public ports are
chosen where no TCP socket listens and no node's port range lies (40000+).
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import _common as c

from engines.network.firewall import elements_of
from engines.network.nftables import NftablesFirewall
from engines.specs import PortSpec, TemplateSpec, VmSpec, port_prefix

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
    host = 2 + index
    return VmSpec(
        id=index, name=f"tt-bench-nat-{index}", template=TEMPLATE, cpu_num=1, mem_mb=128, disk_mb=64,
        mac=f"52:54:00:{host >> 16 & 255:02x}:{host >> 8 & 255:02x}:{host & 255:02x}",
        ip=str(net.network_address + host), ports=(PortSpec("tcp", 80, public_port),),
        env_id=1 + index // 3, reach=(1 + index // 3, 100_000 + index // 30),  # Envs of 3, some peered
    )


def parts(spec: VmSpec) -> dict[str, list]:
    """One VM's elements: its port forward, and its isolation elements."""
    elements = elements_of(spec)
    return {"forward": [e for e in elements if e.family == "ip"],
            "isolation": [e for e in elements if e.family == "bridge"]}


def drop_tables() -> None:
    c.drop_nft_table(TABLE)


def fwd_count(fw: NftablesFirewall) -> int:
    return len(fw.listing().get("fwd_tcp", []))


def run(n: int) -> None:
    c.header(f"nat_scale: add one VM's forward / isolation elements, {SIZES[0]} vs {SIZES[1]} VMs, N={n}")
    fw = NftablesFirewall(vm_network=c.NODE["vm_network"], bridge=c.NODE["bridge"], table=TABLE,
                          port_prefix=port_prefix("tt-bench-nat"))
    ports = free_ports(max(SIZES) + n)
    filled, extra = ports[: max(SIZES)], ports[max(SIZES):]
    samples: dict[str, dict[int, list[float]]] = {"forward": {}, "isolation": {}}
    with c.Cleanup() as cleanup:
        cleanup.add("drop nft tables", drop_tables)
        fw.ensure()
        for size in SIZES:
            t = time.perf_counter()
            fw.rebuild([vm(i, filled[i]) for i in range(size)])
            fill = time.perf_counter() - t
            assert fwd_count(fw) == size, f"map holds {fwd_count(fw)}, not {size}"
            rules = fw.rules()
            for what, times in samples.items():
                times[size] = []
                for k in range(n):
                    added = parts(vm(max(SIZES) + k, extra[k]))[what]
                    t = time.perf_counter()
                    fw.change([], added)
                    times[size].append(time.perf_counter() - t)
                    fw.change(added, [])
                print(f"  {size:>6} VMs (filled in {c.ms(fill).strip()}, {rules} rules): "
                      f"{c.summary(f'add one {what}', times[size])}")
            assert fwd_count(fw) == size
    for what, times in samples.items():
        small, large = (c.median(times[s]) for s in SIZES)
        print(f"  {what}: {c.verdict(f'ratio of medians {SIZES[1]}/{SIZES[0]}', large / small, TARGET)}")
        p95_ratio = c.p95(times[SIZES[1]]) / c.p95(times[SIZES[0]])
        print(f"  {what}: ratio of p95 {SIZES[1]}/{SIZES[0]} = {p95_ratio:.3f}")


def main() -> None:
    run(c.count_from_args(__doc__, "--n", default=50, quick=10, what="additions timed per map size"))


if __name__ == "__main__":
    main()
