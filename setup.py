"""`pip install --no-build-isolation .`: builds candela._candela with the project's CMake build
(only Debian's packages: python3-torch, libtorch-dev, pybind11-dev, ...) and installs the package.

The build goes to build-pip/ (tests and benchmarks off), or reuses an existing build folder named by
$CANDELA_BUILD_DIR. Debian's Python is externally managed: install into a virtual environment that
sees Debian's torch:
    /usr/bin/python3 -m venv --system-site-packages ~/venv-candela
    ~/venv-candela/bin/pip install --no-build-isolation .
"""
import glob
import os
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithCMake(build_py):
    def run(self):
        super().run()
        build = os.environ.get("CANDELA_BUILD_DIR")
        if build:  # an existing build folder, used as it is configured
            subprocess.check_call(["cmake", "-S", HERE, "-B", build])
        else:
            build = os.path.join(HERE, "build-pip")
            subprocess.check_call(["cmake", "-S", HERE, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                                   "-DCANDELA_BUILD_TESTS=OFF", "-DCANDELA_BUILD_BENCH=OFF",
                                   "-DCANDELA_BUILD_PYTHON=ON"])
        subprocess.check_call(["cmake", "--build", build, "--target", "candela_py", "-j",
                               os.environ.get("CANDELA_JOBS", "2")])
        modules = glob.glob(os.path.join(build, "python", "candela", "_candela*.so"))
        if not modules:
            raise RuntimeError(f"the build in {build} made no candela/_candela*.so: is pybind11-dev installed?")
        target = os.path.join(self.build_lib, "candela")
        os.makedirs(target, exist_ok=True)
        shutil.copy2(modules[0], target)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(
    name="candela",
    version="0.1.0",
    description="Explanations of deep-learning models (Captum's API) on Candela's C++ engine",
    packages=["candela"],
    package_dir={"": "python"},
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
    extras_require={"dask": ["distributed"], "plot": ["matplotlib"]},
    cmdclass={"build_py": BuildWithCMake},
    distclass=BinaryDistribution,
)
