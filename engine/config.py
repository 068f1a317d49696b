"""Scheduler settings, named as Nova's [filter_scheduler] options."""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROFILE = "default"


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
    # Weighers: multiplier per weigher; Nova's defaults.
    ram_weight_multiplier: float = 1.0
    cpu_weight_multiplier: float = 1.0
    disk_weight_multiplier: float = 1.0
    io_ops_weight_multiplier: float = -1.0
    num_instances_weight_multiplier: float = 0.0
    host_subset_size: int = 1
    max_attempts: int = 3
    extra: dict = field(default_factory=dict)
