"""The fastest backend per model, precision and CPU, as ``segdeploy bench`` measured it on this machine.

Which CPU backend is fastest differs by model, precision and CPU (ONNX Runtime beat OpenVINO by 1.30x on
segnext_t on one CPU while OpenVINO won on most models), so one global default leaves speed on the table. Every
bench run that compares two or more backends on a model (batch 1, one stream) records the winner here, with the
figures it won by; ``predict``, ``eval`` and ``export`` read it when no ``--backend`` is given and say why they
chose what they chose. A small JSON file in the user cache (``$SEGDEPLOY_BACKEND_CACHE``, else
``<user cache>/fastest-backends.json``), written atomically; a damaged or foreign file is ignored, never fatal.

Keys: the CPU (its model name and the thread count), the model, and the precision label (``fp32``, ``fp16``,
``int8-cpu``, ``int8-openvino``, ...; ``int8``: the fastest INT8 flavour within its accuracy tolerance).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass

from segdeploy import __version__, flavours
from segdeploy.files.atomic import write_text_atomic
from segdeploy.files.destinations import user_cache_dir
from segdeploy.hostinfo import cpu_info
from segdeploy.runtimes.registry import BACKENDS, backend_status, default_backend_for, fastest_cpu_backend, get_backend

SCHEMA = "segdeploy.fastest/1"
ENV = "SEGDEPLOY_BACKEND_CACHE"


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str
    measured: bool  # True: from a bench measurement on this CPU; False: the static default
    flavour: str | None = None  # an INT8 flavour, where the entry is about precision


def cache_file() -> str:
    return os.environ.get(ENV) or user_cache_dir("fastest-backends.json")


def cpu_key(threads: int | None = None) -> str:
    cpu = cpu_info()
    return f"{cpu['model']} | {threads or cpu['usable_cores']} threads"


def _key(model: str, precision: str, threads: int | None) -> str:
    return f"{cpu_key(threads)} | {model} | {precision}"


def _load() -> dict:
    try:
        with open(cache_file(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def record(model: str, precision: str, candidates: list[dict], *, threads: int | None, size,
           source: str) -> dict | None:
    """Record the fastest of ``candidates`` (dicts with backend, throughput_ips, p50_ms, optionally flavour) for
    (this CPU, ``model``, ``precision``), when there are at least two to compare; returns the entry written."""
    usable = [c for c in candidates if c.get("throughput_ips")]
    if len({(c["backend"], c.get("flavour")) for c in usable}) < 2:
        return None
    best = max(usable, key=lambda c: c["throughput_ips"])
    entry = {"backend": best["backend"], "flavour": best.get("flavour"), "throughput_ips": best["throughput_ips"],
             "p50_ms": best.get("p50_ms"), "size": list(size) if size else None, "source": source,
             "compared": {_label(c): round(c["throughput_ips"], 3) for c in usable},
             "measured": _dt.date.today().isoformat(), "segdeploy": __version__}
    entries = _load()
    entries[_key(model, precision, threads)] = entry
    try:
        write_text_atomic(cache_file(), json.dumps({"schema": SCHEMA, "entries": entries}, indent=1,
                                                   sort_keys=True) + "\n", force=True)
    except Exception:  # noqa: BLE001 - an unwritable cache must not fail the benchmark that fed it
        return None
    return entry


def _label(candidate: dict) -> str:
    return candidate["backend"] + (f" ({candidate['flavour']})" if candidate.get("flavour") else "")


def lookup(model: str | None, precision: str, threads: int | None = None) -> dict | None:
    if not model:
        return None
    entry = _load().get(_key(model, precision, threads))
    return entry if isinstance(entry, dict) and isinstance(entry.get("backend"), str) else None


def choose(model: str | None, precision: str = "fp32", consumes: tuple[str, ...] = ("model", "onnx"),
           threads: int | None = None, default: str | None = None) -> Choice:
    """The backend to use when none is given: the recorded fastest for this model, precision and CPU where it is
    usable and takes what the caller has (``consumes``), else ``default`` (the static fastest CPU backend when
    None), each with the reason in words."""
    entry = lookup(model, precision, threads)
    if entry is not None:
        backend = entry["backend"]
        known = backend in _backends()
        if known and get_backend(backend).consumes in consumes and backend_status(backend).available:
            others = ", ".join(f"{name} {ips:.1f}" for name, ips in sorted(entry.get("compared", {}).items(),
                                                                              key=lambda item: -item[1])
                               if name != _label(entry))
            reason = (f"{backend}: the fastest for {model} {precision} on this CPU when segdeploy bench measured it "
                      f"on {entry.get('measured')} ({entry['throughput_ips']:.1f} img/s"
                      + (f"; {others} img/s" if others else "") + ")")
            return Choice(backend, reason, True, entry.get("flavour"))
    if default is None:
        default = fastest_cpu_backend(consumes) if "model" in consumes else default_backend_for(consumes[0])
    what = f"{model} {precision}" if model else "this artifact"
    hint = (f"; `segdeploy bench --model {model} --backend onnxruntime,openvino` measures and records the fastest"
            if model else "")
    return Choice(default, f"{default}: the default (no bench measurement of {what} on this CPU yet{hint})", False)


def export_advice(model: str, precision: str, threads: int | None = None) -> list[str]:
    """What export tells about an artifact of ``precision`` (a label such as fp32 or int8-cpu): the backend bench
    measured fastest for it here, and, for INT8, the flavour measured fastest within tolerance when it is another."""
    lines = []
    choice = choose(model, precision, ("onnx",), threads)
    if choice.measured:
        lines.append(f"run it on {choice.reason}")
    else:
        lines.append(f"backend: {choice.reason}")
    best = lookup(model, "int8", threads) if precision.startswith("int8") else None
    if best is not None and best.get("flavour") and best["flavour"] != precision:
        flavour = flavours.of_label(best["flavour"])
        target = flavour.name if flavour else best["flavour"]
        lines.append(f"recommendation: the {best['flavour']} flavour on {best['backend']} was the fastest INT8 within "
                     f"tolerance when segdeploy bench measured it here on {best.get('measured')} "
                     f"({best['throughput_ips']:.1f} img/s): export --target {target} for it")
    return lines


def _backends() -> tuple[str, ...]:
    return tuple(BACKENDS)
