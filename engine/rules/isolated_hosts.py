"""Nova's IsolatedHostsFilter: isolated images only on isolated hosts and, with
restrict_isolated_hosts_to_isolated_images, isolated hosts only for isolated images.

The configured host names become sorted rows at compile time; the host_rows kernels then
refuse either the listed rows or every other row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import rows_of_hosts
from placecheck_engine.verdict import Rejection

ISOLATED_HOST_FOR_OTHER_IMAGE = "ISOLATED_HOST_FOR_OTHER_IMAGE"
ISOLATED_IMAGE_ON_OTHER_HOST = "ISOLATED_IMAGE_ON_OTHER_HOST"


@dataclass(frozen=True, eq=False)
class IsolationParams:
    only_isolated_pass: bool  # True: every unlisted row fails; False: the listed rows fail
    image: str
    rows: np.ndarray  # sorted rows of the isolated hosts


def image_ref(request) -> str | None:
    """The image id, None without an image (boot from volume) or without an id."""
    return request.image.id if request.image and request.image.id else None


def host_passes(host_isolated: bool, request, profile) -> bool:
    """Nova's decision table for one host."""
    restrict = profile.restrict_isolated_hosts_to_isolated_images
    if not profile.isolated_images:
        return not restrict or not host_isolated
    image_isolated = image_ref(request) in profile.isolated_images
    if restrict:
        return image_isolated == host_isolated
    return not image_isolated or host_isolated


class IsolatedHostsFilter(Rule):
    name = "IsolatedHostsFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        # Whether an isolated and a non-isolated host pass: in Nova's table one of them, or both, does.
        isolated_passes = host_passes(True, request, profile)
        other_passes = host_passes(False, request, profile)
        if isolated_passes and other_passes:
            return [Active(self, self.name, None)]
        rows = columns.memo(self.name, profile.isolated_hosts, lambda: rows_of_hosts(columns, profile.isolated_hosts))
        return [Active(self, self.name, IsolationParams(isolated_passes, image_ref(request) or "", rows))]

    def kernel(self, active, columns):
        rows_kernel = _fastfilters.OnlyRowsKernel if active.params.only_isolated_pass else _fastfilters.ListedRowsKernel
        return rows_kernel(active.params.rows, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        image = active.params.image or "(none)"
        if active.params.only_isolated_pass:
            return Rejection(active.name, ISOLATED_IMAGE_ON_OTHER_HOST,
                             f"image {image} is in isolated_images; the host is not in isolated_hosts")
        return Rejection(active.name, ISOLATED_HOST_FOR_OTHER_IMAGE,
                         f"the host is in isolated_hosts and restrict_isolated_hosts_to_isolated_images "
                         f"is set; image {image} is not in isolated_images")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return host_passes(host.name in profile.isolated_hosts, request, profile)
