"""Hard-link this interpreter's torch, torchvision, triton and the CUDA libraries torch's wheel brings into another
site-packages folder, dist-info included, so that pip there finds them installed.

The second ComfyUI's venv would otherwise hold a second copy of about 5 GB; on a machine with little free disk
that copy is what fills it. Files already in the target are left alone; across file systems they are copied.

Usage: python scripts/link_torch.py TARGET_SITE_PACKAGES
"""
import importlib.metadata
import os
import shutil
import sys
import sysconfig
from pathlib import Path

SHARED = ("torch", "torchvision", "triton")
SHARED_PREFIXES = ("nvidia-", "nvidia_", "cuda-", "cuda_")


def shared_dists():
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name in SHARED or name.startswith(SHARED_PREFIXES):
            yield dist


def link_tree(dist, site, target):
    """Links the dist's files that lie in ``site`` (console scripts in bin/ are left out: their first line names
    this interpreter). Returns the number of bytes linked."""
    linked = 0
    for file in dist.files or ():
        source = Path(dist.locate_file(file)).resolve()
        if not source.is_file() or not source.is_relative_to(site):
            continue
        destination = target / source.relative_to(site)
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)
        linked += source.stat().st_size
    return linked


def main(target):
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    target = Path(target).resolve()
    linked = sum(link_tree(dist, site, target) for dist in shared_dists())
    print(f"{linked / 2**30:.1f} GiB of torch and its libraries shared with {target}")


if __name__ == "__main__":
    main(sys.argv[1])
