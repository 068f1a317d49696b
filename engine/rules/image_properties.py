"""Nova's ImagePropertiesFilter: the host supports the image's architecture, hypervisor type and
VM mode, and its hypervisor version satisfies the image's img_hv_requested_version.

The verdict depends only on a host's supported_instances and hypervisor_version, both in its
host profile (columns.dicts["host_profiles"]), so it is decided once per distinct profile.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from engine.model import InvalidField
from engine.nova_fields import (
    ARCHITECTURE_ALIASES,
    ARCHITECTURES,
    HYPERVISOR_TYPE_ALIASES,
    HYPERVISOR_TYPES,
    VM_MODE_ALIASES,
    VM_MODES,
    canonical_name,
)
from engine.rules.value_table import ValueTableRule
from engine.verdict import Rejection

NO_SUPPORTED_INSTANCES = "NO_SUPPORTED_INSTANCES"
UNSUPPORTED_IMAGE_PROPERTIES = "UNSUPPORTED_IMAGE_PROPERTIES"
HYPERVISOR_VERSION_NOT_SATISFIED = "HYPERVISOR_VERSION_NOT_SATISFIED"

# --- oslo.utils VersionPredicate: comma-separated "<op> <PEP 440 version>" conditions ---------

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


def version_string(version: int) -> str:
    """oslo.utils convert_version_to_str: 6002000 -> "6.2.0" (groups of three digits)."""
    groups = []
    while version != 0:
        groups.insert(0, version % 1000)
        version //= 1000
    return ".".join(map(str, groups))


# --- the rule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageWants:
    properties: tuple[str | None, str | None, str | None]  # canonical arch, hypervisor type, VM mode
    version: VersionPredicate | None  # img_hv_requested_version

    def described(self) -> str:
        named = zip(("hw_architecture", "img_hv_type", "hw_vm_mode"), self.properties)
        return ", ".join(f"{name}={value}" for name, value in named if value)


def image_wants(request, profile) -> ImageWants | None:
    """What the request's image asks of a host; None when it asks nothing (Nova's early pass)."""
    properties = request.image.properties if request.image else {}
    path = "request.image.properties"
    architecture = properties.get("hw_architecture", profile.image_properties_default_architecture or None)
    wanted = (
        canonical_name(architecture, ARCHITECTURE_ALIASES, ARCHITECTURES, f"{path}.hw_architecture"),
        canonical_name(properties.get("img_hv_type"), HYPERVISOR_TYPE_ALIASES, HYPERVISOR_TYPES,
                       f"{path}.img_hv_type"),
        canonical_name(properties.get("hw_vm_mode"), VM_MODE_ALIASES, VM_MODES, f"{path}.hw_vm_mode"),
    )
    if not any(wanted):
        return None
    requested_version = properties.get("img_hv_requested_version")
    try:
        version = VersionPredicate.parse(requested_version) if requested_version else None
    except ValueError as error:
        raise InvalidField(f"{path}.img_hv_requested_version", str(error)) from None
    return ImageWants(wanted, version)


def unmet_reason(wants: ImageWants, supported_instances, hypervisor_version: int | None) -> str | None:
    """Nova's _instance_supported for one host: None when it passes, else the reason code.

    A supported (arch, hypervisor type, VM mode) entry fits when every requested value is *in*
    it, at any position, as Nova tests membership. hw_maxphysaddr_bits is not checked: hosts
    here report no cpu_info, and Nova skips the check for a host without those bits."""
    if not supported_instances:
        return NO_SUPPORTED_INSTANCES
    if not any(all(value in entry for value in wants.properties if value) for entry in supported_instances):
        return UNSUPPORTED_IMAGE_PROPERTIES
    if wants.version and hypervisor_version and \
            not wants.version.satisfied_by(version_string(hypervisor_version)):
        return HYPERVISOR_VERSION_NOT_SATISFIED
    return None


class ImagePropertiesFilter(ValueTableRule):
    name = "ImagePropertiesFilter"
    id_column = "host_profile_id"

    def distinct_values(self, columns):
        return columns.dicts["host_profiles"]

    def engages(self, request, profile) -> bool:
        return image_wants(request, profile) is not None

    def verdict_key(self, request, profile) -> ImageWants:
        return image_wants(request, profile)

    def passes_value(self, value, request, profile, columns) -> bool:
        return unmet_reason(image_wants(request, profile), value["supported_instances"],
                            value["hypervisor_version"]) is None

    def explain(self, active, columns, row, placed) -> Rejection:
        wants = image_wants(active.params.request, active.params.profile)
        value = self.value_of(columns, row)
        supported, version = value["supported_instances"], value["hypervisor_version"]
        reason = unmet_reason(wants, supported, version)
        if reason == NO_SUPPORTED_INSTANCES:
            message = f"the image asks for {wants.described()}; the host advertises no supported_instances"
        elif reason == UNSUPPORTED_IMAGE_PROPERTIES:
            entries = "; ".join("/".join(entry) for entry in supported)
            message = f"the image asks for {wants.described()}; the host supports {entries}"
        else:
            message = (f"img_hv_requested_version {wants.version.text!r} not met: "
                       f"hypervisor version {version_string(version)}")
        return Rejection(active.name, reason, message)

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        wants = image_wants(request, profile)
        return wants is None or unmet_reason(wants, host.supported_instances, host.hypervisor_version) is None
