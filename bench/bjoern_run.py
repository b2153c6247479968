"""Launcher for bjoern, run from the app directory:
`python bjoern_run.py MODULE HOST PORT` or `python bjoern_run.py MODULE unix:/PATH`."""

import importlib
import os
import sys

import bjoern

sys.path.insert(0, os.getcwd())
mod = importlib.import_module(sys.argv[1])
if len(sys.argv) > 3:
    bjoern.run(mod.app, sys.argv[2], int(sys.argv[3]))
else:
    bjoern.run(mod.app, sys.argv[2])
