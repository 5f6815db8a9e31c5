"""llama.cpp's own C++ server (``llama-server``), built for the benchmarks from the llama.cpp sources
that the installed llama-cpp-python's sdist vendors, with the Makefile's CPU flags. The build is
cached outside the repository (``~/.cache/untuned-bench``); run this file to build it ahead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "untuned-bench"


def _cpu_flags() -> list[str]:
    flags = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return flags + (["-DGGML_AVX512=ON"] if " avx512f" in cpuinfo else ["-DGGML_AVX512=OFF"])


def llama_server() -> Path:
    """Path of a llama-server binary matching the installed llama-cpp-python, building it if needed."""
    release = version("llama-cpp-python")
    flags = _cpu_flags()
    root = CACHE / f"llama.cpp-{release}-{'avx512' if '-DGGML_AVX512=ON' in flags else 'avx2'}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    sdist = next(root.glob("llama_cpp_python-*.tar.gz"), None)
    if sdist is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={release}",
                "-d",
                str(root),
            ],
            check=True,
        )
        sdist = next(root.glob("llama_cpp_python-*.tar.gz"))
    source = root / "src"
    if not source.exists():
        with tarfile.open(sdist) as archive:
            archive.extractall(root / "unpacked", filter="data")
        shutil.move(next((root / "unpacked").glob("llama_cpp_python-*")) / "vendor" / "llama.cpp", source)
    build = root / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            *flags,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


if __name__ == "__main__":
    from smoke import SMOKE, skipped

    if SMOKE:  # the build takes minutes: say what would be built, from what
        skipped(f"building llama-server {version('llama-cpp-python')} with {' '.join(_cpu_flags())} into {CACHE}")
    else:
        print(llama_server())
