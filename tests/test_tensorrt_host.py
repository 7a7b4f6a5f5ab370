"""Finding TensorRT, trtexec and the GPU without importing TensorRT: pip wheels, JetPack's apt install without pip
metadata, trtexec's banner, nvidia-smi and a Jetson's device tree."""
from __future__ import annotations

import importlib.metadata
import subprocess
from types import SimpleNamespace

from segdeploy.tensorrt_host import (
    JETSON_TRTEXEC,
    GpuInfo,
    find_tensorrt,
    find_trtexec,
    gpu_info,
    jetson_gpu,
    parse_nvidia_smi,
    trtexec_version,
    trtexec_version_from_banner,
    version_tuple,
)


def metadata(versions):
    def lookup(dist):
        if dist in versions:
            return versions[dist]
        raise importlib.metadata.PackageNotFoundError(dist)
    return lookup


def no_module(name):
    return None


def test_pip_wheel_is_found_by_its_metadata():
    install = find_tensorrt(metadata({"tensorrt-cu12": "10.13.3.9"}), no_module)
    assert (install.version, install.source, install.major) == ("10.13.3.9", "pip:tensorrt-cu12", 10)


def test_jetpack_apt_install_without_pip_metadata_is_found():
    spec = SimpleNamespace(origin="/usr/lib/python3.10/dist-packages/tensorrt/__init__.py")
    init = 'import ctypes\n__version__ = "10.3.0"\n'
    install = find_tensorrt(metadata({}), lambda name: spec, lambda path: init if path == spec.origin else "")
    assert (install.version, install.source, install.location) == \
        ("10.3.0", "system", "/usr/lib/python3.10/dist-packages/tensorrt")
    assert install.installed and install.major == 10


def test_absent_and_unreadable_installs():
    assert not find_tensorrt(metadata({}), no_module).installed
    spec = SimpleNamespace(origin="/x/tensorrt/__init__.py")
    assert find_tensorrt(metadata({}), lambda name: spec, lambda path: "").version == "unknown"


def test_trtexec_on_path_then_jetpack_location():
    assert find_trtexec(lambda name: "/opt/trt/bin/trtexec", lambda p: False) == "/opt/trt/bin/trtexec"
    assert find_trtexec(lambda name: None, lambda p: p == JETSON_TRTEXEC) == JETSON_TRTEXEC
    assert find_trtexec(lambda name: None, lambda p: False) is None


def test_trtexec_banner_versions():
    banner = "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # /usr/src/tensorrt/bin/trtexec --help"
    assert trtexec_version_from_banner(banner) == "10.3.0"
    assert trtexec_version_from_banner("[TensorRT v110401]") == "11.4.1"
    assert trtexec_version_from_banner("[TensorRT v8601]") == "8.6.1"
    assert trtexec_version_from_banner("usage: trtexec") is None

    def run(argv, **kwargs):
        assert argv == ["/bin/trtexec", "--help"]
        return subprocess.CompletedProcess(argv, 0, stdout="&&&& RUNNING TensorRT.trtexec [TensorRT v101300]\n",
                                           stderr="")
    assert trtexec_version("/bin/trtexec", run) == "10.13.0"

    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])
    assert trtexec_version("/bin/trtexec", missing) is None


def test_version_tuple():
    assert version_tuple("10.3.0.26") == (10, 3, 0, 26)
    assert version_tuple("11.4.1.post1") == (11, 4, 1)
    assert version_tuple(None) == () and version_tuple("x") == ()


def test_gpu_from_nvidia_smi_and_the_jetson_device_tree():
    assert parse_nvidia_smi("NVIDIA H200, 9.0\nNVIDIA L4, 8.9\n", 1) == GpuInfo("NVIDIA L4", "8.9")
    assert parse_nvidia_smi("NVIDIA H200, [N/A]\n") is None
    compatible = "nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00"
    assert jetson_gpu(compatible, "NVIDIA Jetson AGX Orin Developer Kit\x00") == \
        GpuInfo("NVIDIA Jetson AGX Orin Developer Kit", "8.7")
    assert jetson_gpu("raspberrypi,4-model-b\x00brcm,bcm2711\x00") is None


def test_gpu_info_prefers_torch_then_nvidia_smi_then_the_device_tree():
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 1, get_device_capability=lambda i: (8, 6),
                           get_device_name=lambda i: "NVIDIA RTX A6000")
    assert gpu_info(0, torch_module=SimpleNamespace(cuda=cuda)) == GpuInfo("NVIDIA RTX A6000", "8.6")
    no_cuda = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False))

    def smi(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, stdout="NVIDIA L4, 8.9\n", stderr="")
    assert gpu_info(0, torch_module=no_cuda, run=smi) == GpuInfo("NVIDIA L4", "8.9")

    def no_smi(argv, **kwargs):
        raise FileNotFoundError("nvidia-smi")
    tree = {"/proc/device-tree/compatible": "nvidia,tegra234\x00", "/proc/device-tree/model": "Orin Nano\x00"}
    assert gpu_info(0, torch_module=no_cuda, run=no_smi, read_text=lambda p: tree.get(p, "")) == \
        GpuInfo("Orin Nano", "8.7")
    assert gpu_info(0, torch_module=no_cuda, run=no_smi, read_text=lambda p: "") is None


def test_platform_tells_a_jetson_from_other_arm_and_x86_machines():
    from segdeploy.tensorrt_host import host_platform

    tree = {"/proc/device-tree/compatible": "nvidia,p3701-0005\x00nvidia,tegra234\x00"}
    assert host_platform(lambda: "aarch64", lambda p: tree.get(p, ""), lambda p: False).name == "jetson"
    assert host_platform(lambda: "aarch64", lambda p: "", lambda p: p == "/etc/nv_tegra_release").jetson
    assert host_platform(lambda: "aarch64", lambda p: "", lambda p: False).name == "aarch64"  # e.g. a GH200
    assert host_platform(lambda: "AMD64", lambda p: "", lambda p: True).name == "x86_64"


def test_tensorrt_8_6_says_what_to_do():
    from segdeploy.tensorrt_host import unsupported_release

    assert "JetPack 6.0 ships TensorRT 8.6; upgrade the Jetson to JetPack 6.1 or 6.2" in unsupported_release("8.6.2")
    assert "JetPack" not in unsupported_release("9.0.1")
