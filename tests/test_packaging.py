"""A non-editable install (the built wheel) holds every package, `python -m hoc_drivers` runs the demo."""
import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hoc_drivers.audit import DRIVERS

CHECKOUT = Path(__file__).resolve().parent.parent


def test_setup_cfg_lists_every_package_directory():
    config = configparser.ConfigParser()
    config.read(CHECKOUT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(CHECKOUT).parts)
             for p in (CHECKOUT / "hoc_drivers").rglob("*.py")}
    assert found | {"hoc_drivers.fixtures"} == listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (without dependencies) into a directory."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(work), str(CHECKOUT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = work.glob("hoc_drivers-*.whl")
    site = work / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return wheel, site


def test_the_wheel_holds_the_code_and_the_fixtures(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (CHECKOUT / "hoc_drivers").rglob("*.py"):
        assert source.relative_to(CHECKOUT).as_posix() in names
    for fixture in (CHECKOUT / "fixtures").rglob("*.*"):
        assert f"hoc_drivers/fixtures/{fixture.relative_to(CHECKOUT / 'fixtures').as_posix()}" in names
    assert "cli.py" not in names  # the checkout's thin entry is not a top-level module
    assert any(n.endswith("LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hoc-drivers = hoc_drivers.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_demo_runs_outside_the_checkout(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import runpy, sys, hoc_drivers; assert hoc_drivers.__file__.startswith(sys.argv[1]), "
            "hoc_drivers.__file__; sys.argv = ['hoc-drivers', *sys.argv[2:]]; "
            "runpy.run_module('hoc_drivers', run_name='__main__')")
    usage = subprocess.run([sys.executable, "-m", "hoc_drivers", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert usage.returncode == 0 and "Usage: hoc-drivers" in usage.stdout, usage.stderr
    result = subprocess.run([sys.executable, "-c", code, str(site), "demo", "--json", "--db", "demo.db"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and {step["driver"] for step in report["steps"]} >= set(DRIVERS)
