"""Everything is declared in setup.cfg; this only ships knowledge_nest_quiet.pth.

A .pth file at the top of site-packages is run by every interpreter of the environment, before
any console script: it is the only way to quiet nameko's own ``nameko run`` (see
services/__init__.py). setup.cfg cannot place a file there, so build_py copies it.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "knowledge_nest_quiet.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.mkpath(self.build_lib)
        shutil.copyfile(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
