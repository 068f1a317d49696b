"""Nova's request filters that turn the flavor and image into required traits.

Nova 34 runs its request filters (nova/scheduler/request_filter.py) before asking Placement for
candidates; several of them add traits the root provider must have (`root_required`). Each is a
rule of its own (one module per filter, named as Nova's function), sharing everything here but
how it derives its traits: the kernel is the RequiredTraits scan, the explanation names each
missing trait and what in the request asked for it.

Bad input that makes Nova's filter raise (a flavor and image that disagree, an unknown enum
value) is InvalidField naming the field, as Nova's API refuses such a flavor or image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import os_traits

from placecheck_engine import nova_fields
from placecheck_engine.image_meta import IMAGE_PROPERTIES_PATH, image_meta_props
from placecheck_engine.model import InvalidField, Request
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.required_traits import TraitParams, compile_trait_mask, missing_traits, required_traits_kernel
from placecheck_engine.verdict import Rejection

# The traits os-traits defines: Nova adds a computed trait only when os_traits has it.
STANDARD_TRAITS = frozenset(os_traits.get_traits())

# Required trait -> what in the request asks for it ("image hw_disk_bus=scsi", ...).
TraitOrigins = dict[str, tuple[str, ...]]


def shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def image_properties(request: Request) -> dict[str, object]:
    """The image's properties typed as Nova's ImageMetaProps holds them; none without an image."""
    return image_meta_props(request.image.properties) if request.image else {}


def flavor_field(key: str) -> str:
    return f"request.flavor.extra_specs[{key}]"


@dataclass(frozen=True)
class FlavorImageValue:
    """One setting a flavor extra spec `hw:KEY` and an image property `hw_KEY` may both make
    (Nova's hardware._get_flavor_image_meta)."""

    flavor_key: str
    image_key: str
    flavor_value: Any
    image_value: Any

    @classmethod
    def of(cls, key: str, request: Request, properties: Mapping[str, object]) -> "FlavorImageValue":
        flavor_key, image_key = f"hw:{key}", f"hw_{key}"
        return cls(flavor_key, image_key, request.flavor.extra_specs.get(flavor_key),
                   properties.get(image_key))

    def conflict(self, flavor_value: Any, image_value: Any) -> InvalidField:
        return InvalidField(flavor_field(self.flavor_key),
                            f"{shown(flavor_value)!r} conflicts with the image's {self.image_key}="
                            f"{shown(image_value)!r} (Nova: FlavorImageConflict)")

    def unique(self) -> Any:
        """Nova's _get_unique_flavor_image_meta: both set and different is a conflict; else
        the flavor's value, or the image's."""
        if self.flavor_value and self.image_value and self.flavor_value != self.image_value:
            raise self.conflict(self.flavor_value, self.image_value)
        return self.flavor_value or self.image_value

    def unique_bool(self) -> bool:
        """The boolean form (packed ring, ephemeral encryption): set on both sides with opposite
        values is a conflict. The flavor's string reads as strutils.bool_from_string (anything
        not true is false); the image's value is already typed."""
        flavor = None if self.flavor_value is None else nova_fields.flexible_boolean(self.flavor_value)
        image = self.image_value
        if flavor is not None and image is not None and flavor != image:
            raise self.conflict(self.flavor_value, self.image_value)
        return bool(flavor or image)

    def origin(self) -> str:
        """Where the value came from, for explanations: the flavor wins, as in unique()."""
        if self.flavor_value:
            return f"flavor {self.flavor_key}={shown(self.flavor_value)}"
        return f"image {self.image_key}={shown(self.image_value)}"

    def field_of(self, value: Any) -> str:
        """The field a chosen value came from."""
        if self.flavor_value == value:
            return flavor_field(self.flavor_key)
        return f"{IMAGE_PROPERTIES_PATH}[{self.image_key}]"

    def invalid(self, value: Any, allowed: nova_fields.NovaEnum) -> InvalidField:
        return InvalidField(self.field_of(value),
                            f"{shown(value)!r} is not a valid {allowed.name} ({', '.join(sorted(allowed.valid))})")


@dataclass(frozen=True, eq=False)
class DerivedTraits:
    mask: TraitParams
    origins: TraitOrigins


class RequestFilterTraits(Rule):
    """A request filter that adds required traits; a subclass says which, and why."""

    reason: ClassVar[str]  # the subclass's reason code

    def required_traits(self, request: Request, profile) -> TraitOrigins:
        """The traits this filter adds for the request, each with its origin; {} when none."""
        raise NotImplementedError

    def compile(self, request, columns, profile) -> list[Active]:
        origins = self.required_traits(request, profile)
        if not origins:
            return [Active(self, self.name, None)]
        mask = compile_trait_mask(self, frozenset(origins), columns).params
        return [Active(self, self.name, DerivedTraits(mask, origins))]

    def kernel(self, active, columns):
        derived: DerivedTraits = active.params
        return required_traits_kernel(derived.mask, columns)

    def explain(self, active, columns, row, placed) -> Rejection:
        derived: DerivedTraits = active.params
        needs = []
        for trait in sorted(missing_traits(derived.mask, columns, row)):
            origins = derived.origins[trait]
            needs.append(f"{' and '.join(origins)} {'need' if len(origins) > 1 else 'needs'} {trait}")
        return Rejection(active.name, self.reason, "; ".join(needs) + ", which the host lacks")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return set(self.required_traits(request, profile)) <= host.traits
