"""Which llama.cpp CPU variant this machine may run.

llama-cpp-python is built with every CPU variant as a loadable backend (`make`, see the README):
`libggml-cpu-<name>.so`, each compiled for a fixed instruction set. llama.cpp's own chooser reads
cpuid only, and a CPU that reports a feature is not proof that it may be used: VMs and containers
mask AVX-512 and AMX state, and a VM seen here reported AMX and trapped it. So each feature is
proven by running one of its instructions in a forked child (AMX after the kernel grants it with
`arch_prctl(ARCH_REQ_XCOMP_PERM)`); a feature whose child dies is not used. On aarch64 the kernel
reports in /proc/cpuinfo only the features it enables, so those are taken as they are.

`python -m stackrag.providers.inference.cpu_variants` prints the probe as JSON; it is what the
model supervisor runs, in a process of its own, so a fault can only end that process.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# One instruction (or a few) of each feature, then `ret`; assembled with GNU as.
_VZEROUPPER_RET = bytes.fromhex("c5f877c3")
X86_PROBES: dict[str, bytes] = {
    "SSE42": bytes.fromhex("f20f38f1c0c3"),  # crc32 eax, eax
    "AVX": bytes.fromhex("c5fc57c0") + _VZEROUPPER_RET,  # vxorps ymm0, ymm0, ymm0
    "AVX2": bytes.fromhex("c5fdfec0") + _VZEROUPPER_RET,  # vpaddd ymm0, ymm0, ymm0
    "FMA": bytes.fromhex("c4e27db8c0") + _VZEROUPPER_RET,  # vfmadd231ps ymm0, ymm0, ymm0
    "F16C": bytes.fromhex("c4e27d13c0") + _VZEROUPPER_RET,  # vcvtph2ps ymm0, xmm0
    "BMI2": bytes.fromhex("c4e2fbf5c0c3"),  # pdep rax, rax, rax
    # AVX-512 F, BW, VL, DQ and CD, as llama.cpp's AVX512 variants require them all.
    "AVX512": bytes.fromhex("62a17d40efc0" "62a17d40fcc0" "62a1fd20d4c0" "62a1fd4054c0" "62a27d48c4c0")
    + _VZEROUPPER_RET,
    "AVX512_VBMI": bytes.fromhex("62a27d408dc0") + _VZEROUPPER_RET,  # vpermb zmm16
    "AVX512_VNNI": bytes.fromhex("62a27d4050c0") + _VZEROUPPER_RET,  # vpdpbusd zmm16
    "AVX512_BF16": bytes.fromhex("62a27e4052c0") + _VZEROUPPER_RET,  # vdpbf16ps zmm16
    "AVX_VNNI": bytes.fromhex("c4e27d50c0") + _VZEROUPPER_RET,  # {vex} vpdpbusd ymm0
    # ldtilecfg [rdi]; tilezero tmm0; tilerelease; ret
    "AMX_INT8": bytes.fromhex("c4e2784907" "c4e27b49c0" "c4e27849c0" "c3"),
}
# The /proc/cpuinfo flag(s) that report each feature.
X86_FLAGS: dict[str, tuple[str, ...]] = {
    "SSE42": ("sse4_2",), "AVX": ("avx",), "AVX2": ("avx2",), "FMA": ("fma",), "F16C": ("f16c",),
    "BMI2": ("bmi2",), "AVX512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"),
    "AVX512_VBMI": ("avx512vbmi",), "AVX512_VNNI": ("avx512_vnni",), "AVX512_BF16": ("avx512_bf16",),
    "AVX_VNNI": ("avx_vnni",), "AMX_INT8": ("amx_tile", "amx_int8"),
}
ARM_FLAGS: dict[str, tuple[str, ...]] = {
    "DOTPROD": ("asimddp",), "FP16_VECTOR_ARITHMETIC": ("fphp", "asimdhp"), "SVE": ("sve",),
    "MATMUL_INT8": ("i8mm",), "SVE2": ("sve2",), "SME": ("sme",),
}

# The variants llama.cpp's GGML_CPU_ALL_VARIANTS builds (ggml/src/CMakeLists.txt) and what each needs.
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("SSE42",),
    "sandybridge": ("SSE42", "AVX"),
    "ivybridge": ("SSE42", "AVX", "F16C"),
    "piledriver": ("SSE42", "AVX", "F16C", "FMA"),
    "haswell": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"),
    "skylakex": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"),
    "cannonlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI"),
    "cascadelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI"),
    "icelake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cooperlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI", "AVX512_BF16"),
    "zen4": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16"),
    "alderlake": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"),
    "sapphirerapids": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                       "AVX512_BF16", "AMX_INT8"),
}
ARM_VARIANTS: dict[str, tuple[str, ...]] = {
    "armv8.0_1": (),
    "armv8.2_1": ("DOTPROD",),
    "armv8.2_2": ("DOTPROD", "FP16_VECTOR_ARITHMETIC"),
    "armv8.2_3": ("DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE"),
    "armv8.6_1": ("DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8"),
    "armv8.6_2": ("DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8", "SVE2"),
    "armv9.2_1": ("DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8", "SME"),
    "armv9.2_2": ("DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8", "SVE2", "SME"),
}
# llama.cpp's own ranking weights (ggml-cpu/arch/*/cpu-feats.cpp): the best variant scores highest.
_WEIGHTS = {
    "FMA": 1, "F16C": 2, "SSE42": 4, "BMI2": 8, "AVX": 16, "AVX2": 32, "AVX_VNNI": 64, "AVX512": 128,
    "AVX512_VBMI": 256, "AVX512_BF16": 512, "AVX512_VNNI": 1024, "AMX_INT8": 2048,
    "DOTPROD": 2, "FP16_VECTOR_ARITHMETIC": 4, "SVE": 8, "MATMUL_INT8": 16, "SVE2": 32, "SME": 64,
}

_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158


@dataclass(frozen=True)
class CPU:
    arch: str  # x86_64 | aarch64 | other
    reported: frozenset[str]
    usable: frozenset[str]

    def refused(self) -> list[str]:
        """Features the CPU reports that this machine would not run."""
        return sorted(self.reported - self.usable)


def machine_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    return machine


def variants_for(arch: str) -> dict[str, tuple[str, ...]]:
    return {"x86_64": X86_VARIANTS, "aarch64": ARM_VARIANTS}.get(arch, {})


def score(features: tuple[str, ...]) -> int:
    return 1 + sum(_WEIGHTS[f] for f in features)


def ranked_variants(cpu: CPU, available: list[str]) -> list[str]:
    """The variants this CPU may run, best first, among those installed."""
    table = variants_for(cpu.arch)
    fitting = [name for name in available if name in table and set(table[name]) <= cpu.usable]
    return sorted(fitting, key=lambda name: score(table[name]), reverse=True)


def signature() -> str:
    """This CPU model, its reported features and the kernel: what a trapped variant depends on."""
    import hashlib

    try:
        model = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("model name", "CPU part"))), "")
    except OSError:
        model = ""
    text = f"{machine_arch()}|{model}|{' '.join(sorted(_cpuinfo_flags()))}|{platform.release()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _reported(arch: str, flags: set[str]) -> set[str]:
    table = X86_FLAGS if arch == "x86_64" else ARM_FLAGS if arch == "aarch64" else {}
    return {feature for feature, needed in table.items() if set(needed) <= flags}


def _run_machine_code(code: bytes) -> None:
    """Call `code` as a C function taking one pointer (a zeroed, configured AMX tile config)."""
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    function = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(address)
    tile_config = (ctypes.c_uint8 * 64)()
    tile_config[0] = 1  # palette 1
    tile_config[16] = 64  # tile 0: 64 bytes a row
    tile_config[48] = 16  # tile 0: 16 rows
    function(ctypes.addressof(tile_config))


def _probe_in_child(feature: str) -> bool:
    pid = os.fork()
    if pid == 0:  # the child: run the instruction, or die trying
        try:
            if feature == "AMX_INT8":
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) != 0:
                    os._exit(3)  # the kernel does not grant AMX to this process
            _run_machine_code(X86_PROBES[feature])
            os._exit(0)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def probe_here() -> dict[str, list[str] | str]:
    """Run in a process of its own: forks one child per feature."""
    arch = machine_arch()
    reported = _reported(arch, _cpuinfo_flags())
    if arch == "x86_64":
        usable = {f for f in sorted(reported) if _probe_in_child(f)}
    else:
        usable = set(reported)
    return {"arch": arch, "reported": sorted(reported), "usable": sorted(usable)}


def probe(python: str = sys.executable, timeout: float = 30.0) -> CPU:
    """The probe, in a subprocess; if it cannot run, nothing beyond the baseline is trusted."""
    arch = machine_arch()
    try:
        done = subprocess.run([python, "-m", __name__], capture_output=True, text=True, timeout=timeout)
        found = json.loads(done.stdout)
        return CPU(found["arch"], frozenset(found["reported"]), frozenset(found["usable"]))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return CPU(arch, frozenset(), frozenset())


if __name__ == "__main__":
    print(json.dumps(probe_here()))
