"""Nova's ImagePropertiesFilter: the host supports the image's architecture, hypervisor type and
VM mode, and its hypervisor version satisfies the image's img_hv_requested_version.

The verdict depends only on a host's supported_instances and hypervisor_version, both in its
host profile (columns.dicts["host_profiles"]), so it is decided once per distinct profile.
"""
from __future__ import annotations

from dataclasses import dataclass

from placecheck_engine.image_meta import image_meta_props
from placecheck_engine.model import InvalidField
from placecheck_engine.nova_fields import ARCHITECTURE, VersionPredicate, version_string
from placecheck_engine.rules.value_table import ValueTableRule
from placecheck_engine.verdict import Rejection

NO_SUPPORTED_INSTANCES = "NO_SUPPORTED_INSTANCES"
UNSUPPORTED_IMAGE_PROPERTIES = "UNSUPPORTED_IMAGE_PROPERTIES"
HYPERVISOR_VERSION_NOT_SATISFIED = "HYPERVISOR_VERSION_NOT_SATISFIED"


# --- the rule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageWants:
    properties: tuple[str | None, str | None, str | None]  # canonical arch, hypervisor type, VM mode
    version: VersionPredicate | None  # img_hv_requested_version

    def described(self) -> str:
        named = zip(("hw_architecture", "img_hv_type", "hw_vm_mode"), self.properties)
        return ", ".join(f"{name}={value}" for name, value in named if value)


def default_architecture(profile) -> str | None:
    """image_properties_default_architecture, canonical (Nova's option takes canonical names only)."""
    name = profile.image_properties_default_architecture
    try:
        return ARCHITECTURE.coerce(name) if name else None
    except ValueError as error:
        raise InvalidField("image_properties_default_architecture", str(error)) from None


def image_wants(request, profile) -> ImageWants | None:
    """What the request's image asks of a host; None when it asks nothing (Nova's early pass).

    The properties are ImageMetaProps' (engine.image_meta): legacy names renamed, values canonical."""
    properties = image_meta_props(request.image.properties) if request.image else {}
    wanted = (properties.get("hw_architecture") or default_architecture(profile),
              properties.get("img_hv_type"), properties.get("hw_vm_mode"))
    if not any(wanted):
        return None
    requested_version = properties.get("img_hv_requested_version")
    return ImageWants(wanted, VersionPredicate.parse(requested_version) if requested_version else None)


def unmet_reason(wants: ImageWants, supported_instances, hypervisor_version: int | None) -> str | None:
    """Nova's _instance_supported for one host: None when it passes, else the reason code.

    A supported (arch, hypervisor type, VM mode) entry fits when every requested value is *in*
    it, at any position, as Nova tests membership. hw_maxphysaddr_bits is not checked: Nova
    compares it with the host's cpu_info, which hosts here do not report."""
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
