"""The hardware fingerprint (docs/protocol.md §3).

``fp = hex(SHA-256("azaion-loader/v1/fingerprint\\n" "machine-id=" M "\\n" "arch=" A "\\n"))``

Inputs, both readable without privileges and stable across reboots:

- ``M``: the machine id, from ``LOADER_HW_MACHINE_ID`` or the first readable of
  ``/etc/machine-id`` and ``/var/lib/dbus/machine-id``; stripped, lowercased.
  On a Kubernetes node it equals ``status.nodeInfo.machineID``.
- ``A``: the architecture in Go naming (``amd64``, ``arm64``, ...), from
  ``LOADER_HW_ARCH`` or ``platform.machine()``; equals ``status.nodeInfo.architecture``.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass

from azaion_loader.errors import FingerprintError
from azaion_loader.settings import HardwareSettings

__all__ = ["FingerprintInputs", "compute_fingerprint", "go_arch", "read_inputs"]

_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def go_arch(machine: str) -> str:
    """Map ``uname -m`` naming to Go's ``GOARCH`` naming (unknown names pass through)."""
    m = machine.strip().lower()
    return _GO_ARCH.get(m, m)


@dataclass(frozen=True)
class FingerprintInputs:
    """The (non-secret) inputs of the fingerprint and where each came from."""

    machine_id: str
    arch: str
    machine_id_source: str
    arch_source: str

    @property
    def fingerprint(self) -> str:
        """The fingerprint of these inputs."""
        return compute_fingerprint(self.machine_id, self.arch)


def compute_fingerprint(machine_id: str, arch: str) -> str:
    """The fingerprint of a machine id and an architecture (inputs normalised)."""
    m = machine_id.strip().lower()
    a = arch.strip().lower()
    if not m or not a:
        raise FingerprintError("the machine id and the architecture must not be empty")
    text = f"azaion-loader/v1/fingerprint\nmachine-id={m}\narch={a}\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_inputs(hw: HardwareSettings) -> FingerprintInputs:
    """Read the inputs, honouring the overrides; :class:`FingerprintError` if none found."""
    if hw.machine_id:
        machine_id, m_source = hw.machine_id.strip().lower(), "LOADER_HW_MACHINE_ID"
    else:
        machine_id, m_source = "", ""
        for path in hw.machine_id_paths:
            try:
                with open(path, encoding="utf-8") as f:
                    machine_id = f.read().strip().lower()
            except OSError:
                continue
            if machine_id:
                m_source = path
                break
        if not machine_id:
            raise FingerprintError(
                "cannot read a machine id from " + " or ".join(hw.machine_id_paths)
            )
    if hw.arch:
        arch, a_source = go_arch(hw.arch), "LOADER_HW_ARCH"
    else:
        arch, a_source = go_arch(platform.machine()), "platform.machine()"
    if not arch:
        raise FingerprintError(
            "cannot determine the architecture", hint="set LOADER_HW_ARCH (e.g. amd64)"
        )
    return FingerprintInputs(machine_id, arch, m_source, a_source)
