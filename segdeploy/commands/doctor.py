"""segdeploy doctor: which backends, devices and tools are usable here, and why the others are not."""
from __future__ import annotations

from segdeploy import backends
from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.hostinfo import int8_speed_note, machine_info
from segdeploy.runtimes.registry import all_backends, fastest_cpu_backend

# Optional extras: what each one adds, and how to install it.
TOOLS = (("onnxsim", "export: onnx-simplifier as the fallback simplifier", "pip install 'segdeploy[simplify]'"),
         ("matplotlib", "bench --plot", "pip install 'segdeploy[plot]'"),
         (backends.OPENVINO, "the OpenVINO backend (fastest on most models here)", "pip install 'segdeploy[openvino]'"),
         (backends.TENSORRT, "TensorRT engines (NVIDIA GPU)", "pip install tensorrt, or JetPack's python3-libnvinfer"))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="show usable backends, devices, versions, CPU features and missing "
                                             "extras", epilog="examples:\n  segdeploy doctor\n  segdeploy doctor "
                                                              "--json -", formatter_class=common.HelpFormatter)
    common.add_json(p, "the diagnosis")
    common.add_force(p, "--json")
    p.set_defaults(func=run)


def diagnose() -> dict:
    machine = machine_info()
    statuses = [status.as_dict() for status in all_backends()]
    tools = [{"name": name, "version": machine["versions"].get(name), "used_for": used_for, "install": install}
             for name, used_for, install in TOOLS]
    return {"machine": machine, "backends": statuses, "tools": tools, "default_cpu_backend": fastest_cpu_backend(),
            "int8": int8_speed_note(machine["cpu"])}


def run(args) -> int:
    common.check_outputs(args.force, args.json)
    info = diagnose()
    written = common.write_json(args.json, info, args.force)
    if args.json:
        if written:
            print(f"wrote {written}")
        return 0
    m, cpu = info["machine"], info["machine"]["cpu"]
    print_table("machine", ["item", "value"], [
        ["host", m["host"]], ["os", m["os"]], ["python", m["python"]], ["cpu", cpu["model"]],
        ["cores (logical / physical / usable)", f"{cpu['logical_cores']} / {cpu['physical_cores'] or '?'} / "
                                                f"{cpu['usable_cores']}"],
        ["ISA", " ".join(cpu["isa"]) or "-"],
        ["memory", f"{m['memory_mb'] / 1024:.1f} GiB" if m["memory_mb"] else "?"],
        ["load average (1, 5, 15 min)", m["load_average"] or "?"], ["torch threads", m["torch_threads"]],
        ["GPUs", ", ".join(m["gpus"]) or "none visible to torch"]])
    print_table("backends", ["backend", "usable", "version", "package", "runs", "devices / providers",
                             "why not / caveat"], [
        [b["name"], "yes" if b["available"] else "no", b["version"] or "-", b["distribution"] or "-", b["consumes"],
         ", ".join(b["devices"]) or "-", b["reason"] or "-"] for b in info["backends"]])
    print_table("optional extras", ["extra", "version", "adds", "install"], [
        [t["name"], t["version"] or "not installed", t["used_for"], "-" if t["version"] else t["install"]]
        for t in info["tools"]])
    print(f"default CPU backend for bench and predict: {info['default_cpu_backend']}")
    print(f"INT8 on this CPU: {info['int8']}")
    return 0
