"""Build the Python distribution ``servicebus``.

The extension ``servicebus._sbus`` is compiled from the engine sources that
``core/sources.txt`` lists (the same list CMake reads, so the two builds
cannot disagree on what the engine is) plus the glue in
``bindings/python/_sbus/*.c``. The version is ``SBUS_VERSION`` from
``core/include/sbus/sbus.h``, its one definition.

Install (no PyPI needed; setuptools comes from Debian)::

    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/python -m pip install --no-build-isolation --no-index .
"""

import glob
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def rel(*parts: str) -> str:
    """A path relative to the repository root (setuptools wants those)."""
    return os.path.join(*parts)


def read_version() -> str:
    """SBUS_VERSION from the public header."""
    with open(os.path.join(ROOT, "core", "include", "sbus", "sbus.h"), encoding="utf-8") as f:
        m = re.search(r'#define\s+SBUS_VERSION\s+"([^"]+)"', f.read())
    if not m:
        raise RuntimeError("SBUS_VERSION not found in core/include/sbus/sbus.h")
    return m.group(1)


def engine_sources() -> list:
    """The engine's C sources, from core/sources.txt (one path per line,
    relative to the repository root, '#' comments)."""
    out = []
    with open(os.path.join(ROOT, "core", "sources.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and line.endswith(".c"):
                out.append(line)
    return out


def pkg_config(*args: str) -> list:
    """pkg-config output as a list, or [] when pkg-config is missing."""
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out)


def proton_flags():
    cflags = pkg_config("--cflags", "libqpid-proton")
    libs = pkg_config("--libs", "libqpid-proton") or ["-lqpid-proton"]
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    return include_dirs, library_dirs, libraries


glue = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "bindings", "python", "_sbus", "*.c")))
proton_inc, proton_libdirs, proton_libs = proton_flags()

ext = Extension(
    "servicebus._sbus",
    sources=engine_sources() + glue,
    include_dirs=[rel("core", "include"), rel("core", "src"), rel("bindings", "python", "_sbus")] + proton_inc,
    library_dirs=proton_libdirs,
    libraries=proton_libs + ["ssl", "crypto"],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fvisibility=hidden"],
    depends=glob.glob(os.path.join("core", "include", "sbus", "*.h"))
    + glob.glob(os.path.join("core", "src", "*.h"))
    + glob.glob(os.path.join("bindings", "python", "_sbus", "*.h")),
)

from setuptools.command.build_py import build_py  # noqa: E402


class build_py_with_emulator(build_py):
    """Also builds the CMake target sbus-emulator into servicebus/_bin, so a
    pip-installed servicebus.testing and `servicebus emulator` have their
    emulator. CMake is the one truth for the emulator's sources. Without
    cmake (or if it fails) the package installs without it and
    servicebus.testing looks elsewhere ($SBUS_EMULATOR, build/, PATH);
    SBUS_SKIP_EMULATOR=1 skips it, SBUS_REQUIRE_EMULATOR=1 makes failure fatal."""

    def run(self):
        super().run()
        if os.environ.get("SBUS_SKIP_EMULATOR") == "1":
            return
        cmake_dir = os.path.abspath(os.path.join(self.get_finalized_command("build").build_temp, "sbus-emulator"))
        try:
            subprocess.run(["cmake", "-S", ROOT, "-B", cmake_dir, "-DCMAKE_BUILD_TYPE=Release",
                            "-DSBUS_BUILD_LUA=OFF"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", cmake_dir, "--target", "sbus-emulator",
                            "-j", str(os.cpu_count() or 1)], check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get("SBUS_REQUIRE_EMULATOR") == "1":
                raise
            self.warn("sbus-emulator not bundled (%s); servicebus.testing will look for it elsewhere" % exc)
            return
        dest = os.path.join(self.build_lib, "servicebus", "_bin")
        self.mkpath(dest)
        self.copy_file(os.path.join(cmake_dir, "emulator", "sbus-emulator"), os.path.join(dest, "sbus-emulator"))


setup(
    name="servicebus",
    version=read_version(),
    description="Azure Service Bus client: one C engine, native asyncio (azure.servicebus.aio API)",
    long_description=__doc__,
    license="MIT",
    python_requires=">=3.10",
    package_dir={"": rel("bindings", "python")},
    packages=["servicebus", "servicebus.aio", "servicebus.testing"],
    package_data={"servicebus": ["py.typed", "_sbus.pyi"]},
    include_package_data=False,
    ext_modules=[ext],
    cmdclass={"build_py": build_py_with_emulator},
    entry_points={
        "console_scripts": ["servicebus = servicebus.cli:main"],
        "pytest11": ["servicebus = servicebus.testing.pytest_plugin"],
    },
    zip_safe=False,
)
