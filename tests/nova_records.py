"""Runs inside .venv-nova (Nova's own Python): registers compute hosts as database records.

    python nova_records.py NOVA_CONF '[{"host": "compute-00", "uuid": "...", "host_ip": "10.0.0.1", "disabled": false}]'

A nova-compute cannot reach a conductor over the fake transport the test nova-api uses, so each
compute host is written as Nova's functional tests write one: a nova-compute Service and its
ComputeNode (the node's uuid is the host's Placement resource provider) in cell1, and a
HostMapping in the API database, so that the API finds it (os-services, os-aggregates add_host).
A service is disabled here, not through the API: disabling it there makes nova-api call the
compute service (to sync the COMPUTE_STATUS_DISABLED trait), which never answers.
"""
import json
import sys

from nova import config, context, objects


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


def main() -> None:
    config_file, specs = sys.argv[1], json.loads(sys.argv[2])
    config.parse_args(["nova-records", "--config-file", config_file])
    objects.register_all()
    admin = context.get_admin_context()
    cell = next(mapping for mapping in objects.CellMappingList.get_all(admin) if not mapping.is_cell0())
    for spec in specs:
        register(admin, cell, spec)


if __name__ == "__main__":
    main()
