"""The install step's choice of Python (.ci/env.sh): a user's own environment as it is, else the project's .venv/."""

import os
import subprocess

import pytest
from test_cache import REPO


def chosen_python(**environment: str) -> str:
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **environment}
    done = subprocess.run(
        ["bash", "-c", 'source .ci/env.sh && echo "$PYTHON"'],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({}, str(REPO / ".venv" / "bin" / "python")),  # the system Python refuses pip (PEP 668)
        ({"VIRTUAL_ENV": "/opt/my-venv"}, "/opt/my-venv/bin/python"),
        ({"CONDA_PREFIX": "/opt/conda/envs/x"}, "/opt/conda/envs/x/bin/python"),
        ({"PYTHON": "/usr/local/bin/python3.12", "VIRTUAL_ENV": "/opt/my-venv"}, "/usr/local/bin/python3.12"),
    ],
)
def test_the_install_uses_the_active_environment_or_the_project_venv(environment, expected):
    assert chosen_python(**environment) == expected
