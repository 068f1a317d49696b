"""Runs inside .venv-nova (Nova's own Python): registers compute hosts and instances as records.

    python nova_records.py NOVA_CONF computes '[{"host": "compute-00", "uuid": "...", "host_ip": "10.0.0.1",
                                                "disabled": false}]'
    python nova_records.py NOVA_CONF instances '[{"uuid": "...", "host": "compute-00", "project_id": "p1",
                                                 "vm_state": "active", "task_state": null, "image": "..."}]'

A nova-compute cannot reach a conductor over the fake transport the test nova-api uses, so each
compute host is written as Nova's functional tests write one: a nova-compute Service and its
ComputeNode (the node's uuid is the host's Placement resource provider) in cell1, and a
HostMapping in the API database, so that the API finds it (os-services, os-aggregates add_host).
A service is disabled here, not through the API: disabling it there makes nova-api call the
compute service (to sync the COMPUTE_STATUS_DISABLED trait), which never answers. Instances
likewise: nova-api hands a boot to the conductor, which the fake transport never reaches; an
instance record (with its InstanceMapping) is what a built instance leaves in the databases.
An instance given again (same uuid) has its host and states updated.
"""
import json
import sys

from nova import config, context, exception, objects
from nova.network import model as network_model
from oslo_utils import timeutils


def register(admin, cell, spec: dict) -> None:
    with context.target_cell(admin, cell) as cell_context:
        service = objects.Service(cell_context, host=spec["host"], binary="nova-compute", topic="compute",
                                  report_count=1, disabled=spec.get("disabled", False),
                                  disabled_reason="test" if spec.get("disabled") else None)
        service.create()
        objects.ComputeNode(
            cell_context, uuid=spec["uuid"], host=spec["host"], hypervisor_hostname=spec["host"],
            service_id=service.id, vcpus=16, memory_mb=65536, local_gb=1000, vcpus_used=0, memory_mb_used=0,
            local_gb_used=0, free_ram_mb=65536, free_disk_gb=1000, current_workload=0, running_vms=0,
            hypervisor_type="QEMU", hypervisor_version=8002000, cpu_info="{}", disk_available_least=1000,
            host_ip=spec["host_ip"], supported_hv_specs=[], stats={}, metrics="[]", extra_resources=None,
            cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0,
        ).create()
    objects.HostMapping(admin, host=spec["host"], cell_mapping=cell).create()


def record_instance(admin, cell, spec: dict) -> None:
    with context.target_cell(admin, cell) as cell_context:
        try:
            instance = objects.Instance.get_by_uuid(cell_context, spec["uuid"])
        except exception.InstanceNotFound:
            instance = None
        node = objects.ComputeNode.get_by_host_and_nodename(cell_context, spec["host"], spec["host"])
        if instance is not None:
            instance.host = instance.node = spec["host"]
            instance.compute_id = node.id
            instance.vm_state, instance.task_state = spec["vm_state"], spec["task_state"]
            instance.save()
            return
        flavor = objects.Flavor(flavorid="1", name="small", memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                                swap=0, rxtx_factor=1.0, vcpu_weight=0, disabled=False, is_public=True,
                                extra_specs={}, description=None)
        instance = objects.Instance(
            cell_context, uuid=spec["uuid"], host=spec["host"], node=spec["host"], compute_id=node.id,
            project_id=spec["project_id"],
            user_id="user", vm_state="building", task_state="spawning", power_state=0,
            flavor=flavor, old_flavor=None, new_flavor=None, instance_type_id=1, memory_mb=512, vcpus=1,
            root_gb=1, ephemeral_gb=0, display_name=spec["uuid"][:8], availability_zone=None,
            image_ref=spec.get("image", ""),  # none: booted from a volume
            info_cache=objects.InstanceInfoCache(network_info=network_model.NetworkInfo([])),
        )
        instance.create()
        # The build's last step, as nova-compute saves it: the record has been updated since
        # (what a changes-since query goes by).
        instance.vm_state, instance.task_state, instance.power_state = spec["vm_state"], spec["task_state"], 1
        instance.launched_at = timeutils.utcnow()
        instance.save()
    objects.InstanceMapping(admin, instance_uuid=spec["uuid"], cell_mapping=cell,
                            project_id=spec["project_id"], user_id="user").create()


def main() -> None:
    config_file, kind, specs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config.parse_args(["nova-records", "--config-file", config_file])
    objects.register_all()
    admin = context.get_admin_context()
    cell = next(mapping for mapping in objects.CellMappingList.get_all(admin) if not mapping.is_cell0())
    record = {"computes": register, "instances": record_instance}[kind]
    for spec in specs:
        record(admin, cell, spec)


if __name__ == "__main__":
    main()
