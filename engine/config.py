"""Scheduler settings, named as Nova's [filter_scheduler] options.

A configuration file (TOML) holds named profiles; every option of a profile
carries the name of the nova.conf option it mirrors, so an operator can port
a nova.conf by copying values:

    default_profile = "default"
    [profiles.default]
    enabled_filters = ["resource", "ComputeFilter", ...]
    ram_weight_multiplier = 1.0

An option a profile leaves out takes Nova's default; a profile that leaves out
`enabled_filters` runs every implemented rule.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placecheck_engine.model import InvalidField
from placecheck_engine.nova_fields import ARCHITECTURE
from placecheck_engine.pci import PciAliasError, parse_aliases

DEFAULT_PROFILE = "default"
BUILT_IN_SOURCE = "<built-in>"
OPTIONS_SOURCE = "<options>"


class ConfigError(ValueError):
    """A configuration that cannot be used; `source` is the file, `key` the dotted option path."""

    def __init__(self, source: str, key: str, description: str):
        super().__init__(f"{source}: {key}: {description}" if key else f"{source}: {description}")
        self.source = source
        self.key = key
        self.description = description


@dataclass(frozen=True)
class Profile:
    name: str = DEFAULT_PROFILE
    # Rules in evaluation order; names as Nova's filter classes, resource rules as "resource".
    enabled_filters: tuple[str, ...] = ()
    max_io_ops_per_host: int = 8
    max_instances_per_host: int = 50
    allow_resize_to_same_host: bool = False
    isolated_hosts: tuple[str, ...] = ()
    isolated_images: tuple[str, ...] = ()
    restrict_isolated_hosts_to_isolated_images: bool = True
    # AggregateImagePropertiesIsolation: only image properties under this namespace ("" = all).
    aggregate_image_properties_isolation_namespace: str = ""
    aggregate_image_properties_isolation_separator: str = "."
    # ImagePropertiesFilter: architecture assumed for images without hw_architecture ("" = none).
    image_properties_default_architecture: str = ""
    # Nova's [metrics] weight_setting: "name=ratio" entries (MetricsFilter needs these names).
    metrics_weight_setting: tuple[str, ...] = ()
    # Nova's [metrics] required and weight_of_unavailable: without `required`, a host lacking a
    # metric weighs weight_of_unavailable instead of failing the weighing.
    metrics_required: bool = True
    metrics_weight_of_unavailable: float = -10000.0
    # Weighers: multiplier per weigher; Nova's defaults.
    ram_weight_multiplier: float = 1.0
    cpu_weight_multiplier: float = 1.0
    disk_weight_multiplier: float = 1.0
    io_ops_weight_multiplier: float = -1.0
    num_instances_weight_multiplier: float = 0.0
    hypervisor_version_weight_multiplier: float = 1.0
    soft_affinity_weight_multiplier: float = 1.0
    soft_anti_affinity_weight_multiplier: float = 1.0
    build_failure_weight_multiplier: float = 1000000.0
    metrics_weight_multiplier: float = 1.0  # Nova's [metrics] weight_multiplier
    host_subset_size: int = 1
    shuffle_best_same_weighed_hosts: bool = False
    max_attempts: int = 3
    # Nova's [scheduler] request filters: require_tenant_aggregate and isolate_aggregates.
    limit_tenants_to_placement_aggregate: bool = False
    placement_aggregate_required_for_tenants: bool = False
    enable_isolated_aggregate_filtering: bool = False
    # Nova's [scheduler] request filters that add required traits: require_image_type_support
    # (COMPUTE_IMAGE_TYPE_<disk_format>) and transform_image_metadata (image properties to traits).
    query_placement_for_image_type_support: bool = False
    image_metadata_prefilter: bool = False
    # NUMATopologyFilter and PciPassthroughFilter. Nova's [pci] alias: one JSON object per entry,
    # as in nova.conf. The allocation ratios a compute reports when nova.conf sets none
    # (initial_cpu_allocation_ratio, initial_ram_allocation_ratio), for hosts whose ratio the
    # fleet does not give. [compute] packing_host_numa_cells_allocation_strategy.
    pci_alias: tuple[str, ...] = ()
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    packing_host_numa_cells_allocation_strategy: bool = False
    pci_weight_multiplier: float = 1.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_options(cls, name: str, options: dict) -> "Profile":
        """A profile from a flat option dict, such as a conformance case's `config`.

        Options this build does not know (settings of rules not implemented yet)
        are kept in `extra` rather than refused; known options are validated."""
        known = {key: value for key, value in options.items() if key in _OPTION_TYPES}
        extra = {key: value for key, value in options.items() if key not in _OPTION_TYPES}
        profile = _build_profile(name, known, OPTIONS_SOURCE, f"profiles.{name}")
        return dataclasses.replace(profile, extra=extra)


# Option name -> the Python type its TOML value must have (float accepts integers too).
_OPTION_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "bool": bool, "str": str,
             "tuple[str, ...]": tuple}[f.type]
    for f in dataclasses.fields(Profile) if f.name not in ("name", "extra")
}

# Nova's lower bounds (nova/conf/scheduler.py `min=`).
_OPTION_MINIMUMS: dict[str, int] = {
    "max_io_ops_per_host": 0,
    "max_instances_per_host": 1,
    "host_subset_size": 1,
    "max_attempts": 1,
    "soft_affinity_weight_multiplier": 0,
    "soft_anti_affinity_weight_multiplier": 0,
}


# Nova's `choices=` (nova/conf/scheduler.py): image_properties_default_architecture takes
# canonical architecture names only; "" is unset.
_OPTION_CHOICES: dict[str, frozenset[str]] = {
    "image_properties_default_architecture": ARCHITECTURE.valid | {""},
}


@dataclass(frozen=True)
class Config:
    revision: str  # short content hash: which configuration a decision was made with
    default_profile: str
    profiles: dict[str, Profile]
    source: str = BUILT_IN_SOURCE

    def profile(self, name: str) -> Profile:
        """The named profile; an empty name is the default profile."""
        chosen = name or self.default_profile
        try:
            return self.profiles[chosen]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise InvalidField("request.profile", f"unknown profile {chosen!r} (known: {known})") from None


def implemented_rules() -> tuple[str, ...]:
    """Every rule this build implements, in evaluation order."""
    from placecheck_engine.rules import RULES  # imported late: rules import this module's Profile

    return tuple(RULES)


def default_config() -> Config:
    """One profile, "default": every implemented rule and Nova's defaults."""
    profile = Profile(name=DEFAULT_PROFILE, enabled_filters=implemented_rules())
    profiles = {DEFAULT_PROFILE: profile}
    return Config(revision=_hash(_canonical(profiles).encode()), default_profile=DEFAULT_PROFILE,
                  profiles=profiles, source=BUILT_IN_SOURCE)


def load_config(path: str | Path) -> Config:
    return config_from_bytes(read_config_file(path), str(path))


def read_config_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(str(path), "", f"cannot read: {error.strerror}") from None


def config_from_bytes(content: bytes, source: str) -> Config:
    """A Config from a file's content, named `source` in errors; the revision hashes the content.

    Lets a reloader validate exactly the bytes it then hands on, however the file changes meanwhile."""
    try:
        document = tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(source, "", f"not valid TOML: {error}") from None
    return parse_config(document, source, revision=_hash(content))


def parse_config(document: dict, source: str, revision: str) -> Config:
    """A Config from an already-parsed TOML document."""
    for key in document:
        if key not in ("default_profile", "profiles"):
            raise ConfigError(source, key, "unknown key (expected default_profile and [profiles.NAME])")
    tables = document.get("profiles", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(source, "profiles", "at least one [profiles.NAME] table is required")
    profiles = {}
    for name, options in tables.items():
        if not isinstance(options, dict):
            raise ConfigError(source, f"profiles.{name}", "must be a table")
        for key in options:
            if key not in _OPTION_TYPES:
                raise ConfigError(source, f"profiles.{name}.{key}", "unknown option")
        profiles[name] = _build_profile(name, options, source, f"profiles.{name}")
    default_profile = document.get("default_profile", DEFAULT_PROFILE)
    if default_profile not in profiles:
        raise ConfigError(source, "default_profile", f"no profile named {default_profile!r}")
    return Config(revision=revision, default_profile=default_profile, profiles=profiles, source=source)


def _build_profile(name: str, options: dict, source: str, prefix: str) -> Profile:
    values: dict[str, Any] = {}
    for key, value in options.items():
        values[key] = _checked(value, _OPTION_TYPES[key], source, f"{prefix}.{key}")
        if key in _OPTION_MINIMUMS and values[key] < _OPTION_MINIMUMS[key]:
            raise ConfigError(source, f"{prefix}.{key}", f"must be >= {_OPTION_MINIMUMS[key]}")
        if key in _OPTION_CHOICES and values[key] not in _OPTION_CHOICES[key]:
            raise ConfigError(source, f"{prefix}.{key}",
                              f"must be one of {', '.join(sorted(_OPTION_CHOICES[key]))}, got {values[key]!r}")
    if "pci_alias" in values:  # refused as Nova refuses its [pci] alias list (PciInvalidAlias)
        try:
            parse_aliases(values["pci_alias"])
        except PciAliasError as error:
            raise ConfigError(source, f"{prefix}.pci_alias[{error.index}]", error.description) from None
    if "enabled_filters" in values:
        known = implemented_rules()
        for rule in values["enabled_filters"]:
            if rule not in known:
                raise ConfigError(source, f"{prefix}.enabled_filters",
                                  f"unknown rule {rule!r} (known: {', '.join(known)})")
        if len(set(values["enabled_filters"])) != len(values["enabled_filters"]):
            raise ConfigError(source, f"{prefix}.enabled_filters", "a rule is listed twice")
    else:
        values["enabled_filters"] = implemented_rules()
    return Profile(name=name, **values)


def _checked(value: Any, expected: type, source: str, key: str) -> Any:
    # bool is an int subclass in Python but never a valid number here.
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # a NaN multiplier would make every weight NaN
            raise ConfigError(source, key, f"must be a finite number, got {value!r}")
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (bool, str) and isinstance(value, expected):
        return value
    if expected is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    wanted = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
              tuple: "a list of strings"}[expected]
    raise ConfigError(source, key, f"must be {wanted}, got {value!r}")


def _canonical(profiles: dict[str, Profile]) -> str:
    return json.dumps({name: dataclasses.asdict(p) for name, p in sorted(profiles.items())},
                      sort_keys=True, default=list)


def _hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]
