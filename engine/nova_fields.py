"""Nova's enumerated field values (nova/objects/fields.py, Nova 34) and their canonical forms.

Nova canonicalises architecture, hypervisor type and VM mode names wherever it loads them: a
compute node's supported_instances (HVSpec) and an image's properties (ImageMetaProps) alike,
so every rule here compares canonical names.
"""
from __future__ import annotations

from engine.model import InvalidField

# nova.objects.fields Architecture.ALL, HVType.ALL and VMMode.ALL, and the aliases their
# canonicalize() maps (names are lower-cased first).
ARCHITECTURES = frozenset((
    "alpha", "armv6", "armv7l", "armv7b", "aarch64", "cris", "i686", "ia64", "lm32", "m68k",
    "microblaze", "microblazeel", "mips", "mipsel", "mips64", "mips64el", "openrisc", "parisc",
    "parisc64", "ppc", "ppcle", "ppc64", "ppc64le", "ppcemb", "s390", "s390x", "sh4", "sh4eb",
    "sparc", "sparc64", "unicore32", "x86_64", "xtensa", "xtensaeb"))
ARCHITECTURE_ALIASES = {"i386": "i686", "i486": "i686", "i586": "i686", "x86_32": "i686",
                        "x86_32p": "i686", "amd64": "x86_64"}
HYPERVISOR_TYPES = frozenset((
    "baremetal", "bhyve", "docker", "fake", "hyperv", "ironic", "kqemu", "kvm", "lxc", "lxd",
    "openvz", "parallels", "phyp", "qemu", "test", "uml", "vbox", "vz", "vmware", "xen", "zvm",
    "prsm"))
HYPERVISOR_TYPE_ALIASES = {"xapi": "xen"}
VM_MODES = frozenset(("hvm", "xen", "uml", "exe"))
VM_MODE_ALIASES = {"pv": "xen", "hv": "hvm", "baremetal": "hvm"}


def canonical_name(value: str | None, aliases: dict, valid: frozenset, field_path: str) -> str | None:
    """nova.objects.fields canonicalize(): lower-cased, aliases mapped; an unknown name is an error."""
    if value is None:
        return None
    name = value.lower()
    name = aliases.get(name, name)
    if name not in valid:
        raise InvalidField(field_path, f"{value!r} is not one of Nova's names ({', '.join(sorted(valid))})")
    return name
