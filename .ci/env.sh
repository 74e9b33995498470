# Sourced by .ci/install, .ci/run and pipelines/demo.sh: choose the Python featx installs into and runs with.
# A user's own environment (an active venv or conda env, or PYTHON=...) is used as it is; otherwise the
# project's own .venv/, because Debian 12+ and Ubuntu 23.04+ refuse pip into the system Python (PEP 668).
if [ -n "${PYTHON:-}" ]; then
  :
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  PYTHON="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ]; then
  PYTHON="$CONDA_PREFIX/bin/python"
else
  PYTHON="$PWD/.venv/bin/python"
fi
export PYTHON
