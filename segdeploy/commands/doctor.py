"""segdeploy doctor: which backends, devices and tools are usable here, and why the others are not."""
from __future__ import annotations

import json

from segdeploy.console import print_table
from segdeploy.runtimes.registry import all_backends, fastest_cpu_backend, machine_info

# Optional tools and what is lost without them.
TOOLS = (("onnxsim", "export: onnx-simplifier pass"), ("onnxslim", "export: onnxslim pass"),
         ("matplotlib", "bench --plot"), ("openvino", "OpenVINO backend"), ("tensorrt", "TensorRT engines"))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="show usable backends, devices, versions and CPU features")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def diagnose() -> dict:
    machine = machine_info()
    backends = [status.as_dict() for status in all_backends()]
    tools = [{"name": name, "version": machine["versions"].get(name), "used_for": used_for}
             for name, used_for in TOOLS]
    return {"machine": machine, "backends": backends, "tools": tools, "default_cpu_backend": fastest_cpu_backend()}


def run(args) -> int:
    info = diagnose()
    if args.json:
        print(json.dumps(info, indent=2))
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
    print_table("backends", ["backend", "usable", "version", "runs", "devices / providers", "why not / caveat"], [
        [b["name"], "yes" if b["available"] else "no", b["version"] or "-", b["consumes"],
         ", ".join(b["devices"]) or "-", b["reason"] or "-"] for b in info["backends"]])
    print_table("optional tools", ["tool", "version", "used for"], [
        [t["name"], t["version"] or "not installed", t["used_for"]] for t in info["tools"]])
    print(f"default CPU backend for bench: {info['default_cpu_backend']}")
    return 0
