"""`placecheck check --server UUID`: the request that moving a real server makes, read from Nova.

What Nova's API gives: the server's flavor (embedded since microversion 2.47; a resize names the
new one with --flavor), whether it boots from volume, its image id, project, pinned availability
zone (2.96), current node, and its server group (policy, members and where they run). What it
does not: the scheduler hints the server was booted with (kept in Nova's RequestSpec, never
shown), and the image's properties (Glance's, not read here).
"""
from __future__ import annotations

import math

from placecheck.v1 import placement_pb2
from placecheck_server.openstack_feed import ApiReader

# 2.47: the server embeds its flavor; 2.64: groups have one policy and its rules; 2.96: the
# server's pinned availability zone.
NOVA_SERVER_MICROVERSION = "2.96"
GROUP_POLICIES = {
    "affinity": placement_pb2.SERVER_GROUP_POLICY_AFFINITY,
    "anti-affinity": placement_pb2.SERVER_GROUP_POLICY_ANTI_AFFINITY,
    "soft-affinity": placement_pb2.SERVER_GROUP_POLICY_SOFT_AFFINITY,
    "soft-anti-affinity": placement_pb2.SERVER_GROUP_POLICY_SOFT_ANTI_AFFINITY,
}


class NovaServers(ApiReader):
    service, title, microversion = "nova", "Nova", NOVA_SERVER_MICROVERSION

    def server(self, server_uuid: str) -> dict:
        return self._get(f"/servers/{server_uuid}")["server"]

    def flavor(self, name: str) -> dict:
        """A flavor by name, shaped as a server embeds it."""
        found = [flavor for flavor in self._get("/flavors/detail?is_public=None")["flavors"] if flavor["name"] == name]
        if len(found) != 1:
            raise ValueError(f"{len(found)} flavors are named {name!r}")
        flavor = found[0]
        return {"vcpus": flavor["vcpus"], "ram": flavor["ram"], "disk": flavor["disk"],
                "ephemeral": flavor.get("OS-FLV-EXT-DATA:ephemeral", 0), "swap": flavor["swap"] or 0,
                "original_name": flavor["name"], "extra_specs": flavor.get("extra_specs") or {}}

    def group_of(self, server_uuid: str) -> dict | None:
        groups = self._get("/os-server-groups?all_projects=True")["server_groups"]
        return next((group for group in groups if server_uuid in group["members"]), None)


def flavor_resources(flavor: dict, boots_from_volume: bool) -> dict[str, int]:
    """What Nova asks Placement for a flavor (its resources_from_flavor_and_bfv): VCPU, MEMORY_MB,
    DISK_GB (root unless booted from volume, ephemeral, swap rounded up to whole GB), with the
    extra specs' `resources:CLASS=N` overriding (0 drops the class)."""
    resources = {"VCPU": flavor["vcpus"], "MEMORY_MB": flavor["ram"],
                 "DISK_GB": (0 if boots_from_volume else flavor["disk"]) + flavor["ephemeral"]
                 + math.ceil(flavor["swap"] / 1024)}
    for key, value in flavor["extra_specs"].items():
        if key.startswith("resources:"):
            resources[key.removeprefix("resources:")] = int(value)
    return {resource_class: amount for resource_class, amount in resources.items() if amount}


def server_request(nova: NovaServers, server_uuid: str, new_flavor: str | None = None) -> placement_pb2.PlacementRequest:
    """The request for moving the server (the operation is the caller's to set)."""
    server = nova.server(server_uuid)
    flavor = nova.flavor(new_flavor) if new_flavor else server["flavor"]
    boots_from_volume = not server.get("image")  # Nova shows "" for a server booted from a volume
    message = placement_pb2.PlacementRequest(
        resources=flavor_resources(flavor, boots_from_volume), project_id=server["tenant_id"],
        instance_uuid=server["id"], source_host=server.get("OS-EXT-SRV-ATTR:hypervisor_hostname") or "",
        availability_zone=server.get("pinned_availability_zone") or "",
        flavor=placement_pb2.Flavor(name=flavor["original_name"], extra_specs=flavor["extra_specs"]))
    if not boots_from_volume:
        message.image.id = server["image"]["id"]
    group = nova.group_of(server["id"])
    if group is not None:
        message.server_group.policy = GROUP_POLICIES[group["policy"]]
        message.server_group.members.extend(group["members"])
        message.server_group.hosts.extend(sorted({
            node for member in group["members"]
            if (node := nova.server(member).get("OS-EXT-SRV-ATTR:hypervisor_hostname"))}))
        if "max_server_per_host" in (group.get("rules") or {}):
            message.server_group.max_server_per_host = int(group["rules"]["max_server_per_host"])
    return message
