"""Making a VM's runtime image from a 2 GiB template vs a 20 MiB one.

Both templates are qcow2 volumes in a libvirt directory pool, created through
the pool API and then really filled (qemu-io writes a non-zero pattern over
every byte: 2 GiB and 20 MiB of allocated data). We then time
LibvirtEngine.create_image (a qcow2 overlay through the pool API, what every VM
create does) N times per template, alternating templates, deleting each image
again untimed.

    .venv/bin/python bench/clone_cost.py [--n 20] [--quick]

(--quick: 5 images per template, for bench/all.py.)

Uses its own pool `tt-bench-clone-pool` (and its directory), removed on exit;
writing the 2 GiB template takes about 15 s.
"""

from __future__ import annotations

import json
import subprocess
import time

import _common as c

from engines.libvirt.engine import LibvirtEngine
from engines.network.firewall import MemoryFirewall
from engines.node_options import NodeOptions
from engines.specs import TemplateSpec, VmSpec

POOL = "tt-bench-clone-pool"
SIZES_MB = {"2 GiB": 2048, "20 MiB": 20}
TARGET = 1.2
CHUNK_MB = 128  # qemu-io writes at most 2 GiB - 512 B per request


def make_template(pool, name: str, size_mb: int) -> str:
    """A qcow2 volume made by the pool, then filled with `size_mb` MiB of non-zero bytes."""
    vol = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='MiB'>{size_mb}</capacity>"
        "<target><format type='qcow2'/></target></volume>", 0,
    )
    writes = []
    for n, start in enumerate(range(0, size_mb, CHUNK_MB)):
        length = min(CHUNK_MB, size_mb - start)
        writes += ["-c", f"write -P {0x11 + n % 200} {start}M {length}M"]
    c.sh("qemu-io", "-f", "qcow2", *writes, vol.path())
    pool.refresh(0)
    return vol.path()


def image_info(path: str) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def spec(index: int, template: TemplateSpec, size_mb: int) -> VmSpec:
    return VmSpec(id=index, name=f"tt-bench-clone-{index}", template=template, cpu_num=1, mem_mb=128,
                  disk_mb=size_mb, mac="", ip="")


def run(n: int) -> None:
    c.header(f"clone_cost: runtime image from a 2 GiB vs a 20 MiB template, N={n}")
    engine = LibvirtEngine(uri=c.URI, options=NodeOptions(
        pool_name=POOL, pool_path=c.pool_path(POOL), firewall=MemoryFirewall(),
    ))
    samples: dict[str, list[float]] = {label: [] for label in SIZES_MB}
    with c.Cleanup() as cleanup:
        cleanup.add("remove pool", c.remove_pool, POOL)
        pool = c.define_pool(POOL)
        templates = {}
        for label, size_mb in SIZES_MB.items():
            t = time.perf_counter()
            path = make_template(pool, f"tpl-{size_mb}m.qcow2", size_mb)
            info = image_info(path)
            print(f"  template {label}: {info['actual-size'] / c.MIB:.0f} MiB allocated "
                  f"(virtual {info['virtual-size'] / c.MIB:.0f} MiB), "
                  f"written in {time.perf_counter() - t:.1f} s")
            templates[label] = TemplateSpec(name=f"bench-{size_mb}m", path=path.rsplit("/", 1)[1],
                                            size_mb=size_mb)
        index = 0
        for k in range(n):
            order = list(SIZES_MB) if k % 2 == 0 else list(reversed(SIZES_MB))
            for label in order:
                vm = spec(index, templates[label], SIZES_MB[label])
                index += 1
                t = time.perf_counter()
                image = engine.create_image(vm)
                samples[label].append(time.perf_counter() - t)
                if k == 0:
                    info = image_info(image)
                    print(f"  image from {label}: qcow2 overlay on {info.get('backing-filename')}, "
                          f"{info['actual-size'] / 1024:.0f} KiB allocated")
                engine.destroy_image(vm)
        for label in SIZES_MB:
            print(f"  {c.summary(f'create_image from {label:>6}', samples[label])}")
    big, small = (samples[label] for label in SIZES_MB)
    print(f"  {c.verdict('ratio of medians 2GiB/20MiB', c.median(big) / c.median(small), TARGET)}")
    print(f"  ratio of p95 2GiB/20MiB = {c.p95(big) / c.p95(small):.3f}")


def main() -> None:
    run(c.count_from_args(__doc__, "--n", default=20, quick=5, what="images made per template"))


if __name__ == "__main__":
    main()
