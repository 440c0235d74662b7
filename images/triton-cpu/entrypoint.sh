#!/bin/sh
# tritonserver on CPU with the python backend: nvidia-pytriton's build of Triton, the way the tests
# run it (devharness/servers.py: TritonServer). Takes the arguments of NGC's `tritonserver`.
#
# The entry point of images/triton-cpu, and what the tests run on a developer machine: everything is
# found through the `python` first on PATH (the image's /opt/venv, or the repository's .venv).
# Triton looks for the python backend's stub next to libtriton_python.so, and pytriton ships one stub
# per Python version elsewhere, so a backend directory is assembled from symlinks: in
# $TRITON_BACKEND_DIR if set, else in a new directory under $TMPDIR (/tmp, an emptyDir in the pod).
# A --backend-directory argument replaces it.
set -eu

PYTHON="$(command -v python3 || command -v python || true)"
[ -n "${PYTHON}" ] || { echo "triton-cpu: no python on PATH" >&2; exit 127; }

# Three lines: pytriton's tritonserver directory, the X.Y Python version, the site-packages path.
info="$("${PYTHON}" -c '
import importlib.util, os, site, sys
spec = importlib.util.find_spec("pytriton")
if spec is None or not spec.submodule_search_locations:
    sys.exit("triton-cpu: nvidia-pytriton is not installed for " + sys.executable)
print(os.path.join(next(iter(spec.submodule_search_locations)), "tritonserver"))
print("%d.%d" % sys.version_info[:2])
print(os.pathsep.join(site.getsitepackages()))
')"
server="$(printf '%s\n' "${info}" | sed -n 1p)"
version="$(printf '%s\n' "${info}" | sed -n 2p)"
sitepackages="$(printf '%s\n' "${info}" | sed -n 3p)"

own_backends=1
for arg in "$@"; do
  case "${arg}" in --backend-directory|--backend-directory=*) own_backends=0 ;; esac
done
if [ "${own_backends}" = 1 ]; then
  backends="${TRITON_BACKEND_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/triton-backends.XXXXXX")}"
  mkdir -p "${backends}/python"
  ln -sf "${server}/backends/python/libtriton_python.so" "${backends}/python/libtriton_python.so"
  ln -sf "${server}/backends/python/triton_python_backend_utils.py" \
    "${backends}/python/triton_python_backend_utils.py"
  stub="${server}/python_backend_stubs/${version}/triton_python_backend_stub"
  [ -x "${stub}" ] || { echo "triton-cpu: pytriton has no python backend stub for Python ${version}" >&2; exit 1; }
  ln -sf "${stub}" "${backends}/python/triton_python_backend_stub"
  set -- "--backend-directory=${backends}" "$@"
fi

# The stub's interpreter does not see a virtualenv; the model's model.py adds PYTHONPATH to sys.path
# (app/multimodal/triton_repo.py), so torch is found where this python has it.
PYTHONPATH="${sitepackages}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONPATH
exec "${server}/bin/tritonserver" "$@"
