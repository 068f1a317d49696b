"""Nova's field types (nova/objects/fields.py and oslo.versionedobjects, Nova 34): how a value
given as a string becomes the typed value Nova holds, or is refused (ValueError).

Nova canonicalises architecture, hypervisor type and VM mode names wherever it loads them: a
compute node's supported_instances (HVSpec) and an image's properties (ImageMetaProps) alike,
so every rule compares canonical names.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class NovaEnum:
    """An enum field's coerce(): optionally lower-cased and aliases mapped, then it must be valid."""
    name: str
    valid: frozenset[str]
    lower_cased: bool = False
    aliases: dict[str, str] = field(default_factory=dict)

    def coerce(self, value: str) -> str:
        name = value.lower() if self.lower_cased else value
        name = self.aliases.get(name, name)
        if name not in self.valid:
            raise ValueError(f"{value!r} is not a valid {self.name} ({', '.join(sorted(self.valid))})")
        return name


def _enum(name: str, *values: str) -> NovaEnum:
    return NovaEnum(name, frozenset(values))


# Architecture, HVType and VMMode: canonicalize() lower-cases and maps Nova's aliases.
ARCHITECTURE = NovaEnum("architecture", frozenset((
    "alpha", "armv6", "armv7l", "armv7b", "aarch64", "cris", "i686", "ia64", "lm32", "m68k",
    "microblaze", "microblazeel", "mips", "mipsel", "mips64", "mips64el", "openrisc", "parisc",
    "parisc64", "ppc", "ppcle", "ppc64", "ppc64le", "ppcemb", "s390", "s390x", "sh4", "sh4eb",
    "sparc", "sparc64", "unicore32", "x86_64", "xtensa", "xtensaeb")), lower_cased=True,
    aliases={"i386": "i686", "i486": "i686", "i586": "i686", "x86_32": "i686", "x86_32p": "i686",
             "amd64": "x86_64"})
HYPERVISOR_TYPE = NovaEnum("hypervisor type", frozenset((
    "baremetal", "bhyve", "docker", "fake", "hyperv", "ironic", "kqemu", "kvm", "lxc", "lxd",
    "openvz", "parallels", "phyp", "qemu", "test", "uml", "vbox", "vz", "vmware", "xen", "zvm",
    "prsm")), lower_cased=True, aliases={"xapi": "xen"})
VM_MODE = NovaEnum("VM mode", frozenset(("hvm", "xen", "uml", "exe")), lower_cased=True,
                   aliases={"pv": "xen", "hv": "hvm", "baremetal": "hvm"})
# The enums whose coerce() lower-cases too (OSType, SCSIModel, VIFModel: legacy spellings).
OS_TYPE = NovaEnum("OS type", frozenset(("linux", "windows")), lower_cased=True)
SCSI_MODEL = NovaEnum("SCSI model", frozenset((
    "buslogic", "ibmvscsi", "lsilogic", "lsisas1068", "lsisas1078", "virtio-scsi", "vmpvscsi")),
    lower_cased=True, aliases={"lsilogicsas": "lsisas1068", "paravirtual": "vmpvscsi"})
VIF_MODEL = NovaEnum("VIF model", frozenset((
    "e1000", "e1000e", "igb", "lan9118", "ne2k_pci", "netfront", "pcnet", "rtl8139", "spapr-vlan",
    "sriov", "virtio", "vmxnet", "vmxnet3")), lower_cased=True,
    aliases={"virtuale1000": "e1000", "virtuale1000e": "e1000e", "virtualpcnet32": "pcnet",
             "virtualsriovethernetcard": "sriov", "virtualvmxnet": "vmxnet", "virtualvmxnet3": "vmxnet3"})
# The rest take the exact value.
BLOCK_DEVICE_ENCRYPTION_FORMAT = _enum("encryption format", "luks", "luksv2", "plain")
BLOCK_DEVICE_TYPE = _enum("block device type", "cdrom", "disk", "floppy", "fs", "lun")
CONFIG_DRIVE_POLICY = _enum("config drive policy", "mandatory", "optional")
CPU_ALLOCATION_POLICY = _enum("CPU allocation policy", "dedicated", "mixed", "shared")
CPU_THREAD_ALLOCATION_POLICY = _enum("CPU thread allocation policy", "isolate", "prefer", "require")
DISK_BUS = _enum("disk bus", "fdc", "ide", "lxc", "sata", "scsi", "uml", "usb", "virtio", "xen")
FIRMWARE_TYPE = _enum("firmware type", "bios", "uefi")
IMAGE_SIGNATURE_HASH_TYPE = _enum("signature hash method", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
IMAGE_SIGNATURE_KEY_TYPE = _enum("signature key type", "DSA", "ECC_SECP384R1", "ECC_SECP521R1",
                                 "ECC_SECT409K1", "ECC_SECT409R1", "ECC_SECT571K1", "ECC_SECT571R1", "RSA-PSS")
INPUT_BUS = _enum("input bus", "usb", "virtio")
MAX_PHYS_ADDR_MODE = _enum("maxphysaddr mode", "emulate", "passthrough")
MEM_ENCRYPTION_MODEL = _enum("memory encryption model", "amd-sev", "amd-sev-es", "amd-sev-snp", "intel-tdx")
PCI_NUMA_AFFINITY_POLICY = _enum("PCI NUMA affinity policy", "legacy", "preferred", "required", "socket")
POINTER_MODEL = _enum("pointer model", "usbtablet")
RNG_MODEL = _enum("RNG model", "virtio")
SECURE_BOOT = _enum("secure boot", "disabled", "optional", "required")
SOUND_MODEL = _enum("sound model", "ac97", "es1370", "ich6", "ich9", "pcspk", "sb16", "usb", "virtio")
TPM_MODEL = _enum("TPM model", "tpm-crb", "tpm-tis")
TPM_VERSION = _enum("TPM version", "1.2", "2.0")
USB_CONTROLLER_MODEL = _enum("USB controller model", "nec-xhci", "none", "qemu-xhci")
VIDEO_MODEL = _enum("video model", "bochs", "cirrus", "gop", "none", "qxl", "vga", "virtio", "vmvga", "xen")
VIOMMU_MODEL = _enum("vIOMMU model", "auto", "intel", "smmuv3", "virtio")
WATCHDOG_ACTION = _enum("watchdog action", "disabled", "none", "pause", "poweroff", "reset")

# oslo.utils strutils.bool_from_string, as FlexibleBooleanField reads a string: anything not
# true is False, never an error.
TRUE_STRINGS = frozenset(("1", "t", "true", "on", "y", "yes"))


def flexible_boolean(value: str) -> bool:
    return value.strip().lower() in TRUE_STRINGS


def integer(value: str) -> int:
    """IntegerField: Python's int(), so " 3" and "1_0" are accepted and "3.0" is refused."""
    return int(value)


# HVSpec's fields, as placecheck names them: a compute node's supported_instances entry.
HV_SPEC_FIELDS = (("architecture", ARCHITECTURE), ("hypervisor_type", HYPERVISOR_TYPE), ("vm_mode", VM_MODE))


def canonical_hv_spec(entry: tuple[str, str, str]) -> tuple[str, str, str]:
    """nova.objects.HVSpec.from_list: one supported_instances entry in canonical names."""
    if len(entry) != len(HV_SPEC_FIELDS):
        raise ValueError("must be [architecture, hypervisor type, vm mode]")
    return tuple(nova_enum.coerce(value) for (_, nova_enum), value in zip(HV_SPEC_FIELDS, entry))


# --- oslo.utils VersionPredicate (VersionPredicateField): "<op> <PEP 440 version>", comma-separated

_CONDITION = re.compile(r"^\s*(<=|>=|<|>|!=|==)\s*([^\s]+)\s*$")
_COMPARISONS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, ">": operator.gt,
                ">=": operator.ge, "!=": operator.ne}
# PEP 440's public version grammar (its appendix), matched case-insensitively after strip().
_PEP440_VERSION = re.compile(r"""
    v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_letter>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_number>[0-9]+)?)?
    (?:-(?P<post_implicit>[0-9]+)|[-_.]?(?P<post_letter>post|rev|r)[-_.]?(?P<post_number>[0-9]+)?)?
    (?:[-_.]?(?P<dev>dev)[-_.]?(?P<dev_number>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
""", re.VERBOSE | re.IGNORECASE)
_PRE_RELEASE_LETTERS = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}
# Sort-key sentinels standing for "before / after every value" (packaging's infinities).
_BEFORE, _AFTER = (0,), (2,)


def version_key(text: str) -> tuple:
    """PEP 440 ordering key, as packaging.version.Version orders versions; ValueError if invalid."""
    found = _PEP440_VERSION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"invalid version {text!r}")
    release = [int(part) for part in found["release"].split(".")]
    while release and release[-1] == 0:  # 6.0 == 6.0.0
        release.pop()
    pre_letter = found["pre_letter"]
    post = found["post_implicit"] or (found["post_letter"] and (found["post_number"] or "0"))
    dev = found["dev"] and int(found["dev_number"] or 0)
    if pre_letter:
        pre = (1, _PRE_RELEASE_LETTERS.get(pre_letter.lower(), pre_letter.lower()), int(found["pre_number"] or 0))
    else:
        # A bare .devN sorts before every pre-release of the same release.
        pre = _BEFORE if post is None and dev is not None else _AFTER
    local = () if found["local"] is None else tuple(
        (1, int(part), "") if part.isdigit() else (0, 0, part.lower())
        for part in re.split(r"[-_.]", found["local"]))
    return (int(found["epoch"] or 0), tuple(release), pre,
            _BEFORE if post is None else (1, int(post)),
            _AFTER if dev is None else (1, dev), local)


@dataclass(frozen=True)
class VersionPredicate:
    text: str
    conditions: tuple[tuple[str, tuple], ...]  # (operator, version_key)

    @classmethod
    @lru_cache(maxsize=1024)
    def parse(cls, text: str) -> "VersionPredicate":
        conditions = []
        for condition in text.split(","):
            found = _CONDITION.match(condition)
            if found is None:
                raise ValueError(f"bad version restriction {condition!r}")
            conditions.append((found[1], version_key(found[2])))
        return cls(text, tuple(conditions))

    def satisfied_by(self, version: str) -> bool:
        key = version_key(version)
        return all(_COMPARISONS[op](key, wanted) for op, wanted in self.conditions)


def version_predicate(value: str) -> str:
    """VersionPredicateField keeps the text once it parses."""
    VersionPredicate.parse(value)
    return value


def version_string(version: int) -> str:
    """oslo.utils convert_version_to_str: 6002000 -> "6.2.0" (groups of three digits)."""
    groups = []
    while version != 0:
        groups.insert(0, version % 1000)
        version //= 1000
    return ".".join(map(str, groups))
