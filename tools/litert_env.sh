#!/usr/bin/env bash
# Make a LiteRT environment layered on the current one: a second venv (default .venv-litert) that sees
# this environment's packages (torch, compresslab, pytest, ...) through a .pth file and adds only
# litert-torch + ai-edge-litert and their own dependencies, with torch, torchao, torchvision and numpy
# held at this environment's versions, so the main environment stays consistent (`pip check` clean).
# xdsl (the converter's dependency) caps typing_extensions below 4.13, but Jupyter's client needs a newer
# one (TypedDict extra_items) to run notebooks; the converter works with the newer one (the LiteRT
# tests pass), so the second venv drops its own copy and uses the main environment's.
#
#   tools/litert_env.sh [DIR]      then: DIR/bin/python -m pytest tests/deploy/test_deploy_litert.py
set -euo pipefail
target=${1:-.venv-litert}
python=${PYTHON:-python}
main_site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
held=$(mktemp)
trap 'rm -f "$held"' EXIT
"$python" -m pip freeze 2>/dev/null | grep -i -E "^(torch|torchao|torchvision|numpy)==" > "$held"
"$python" -m venv "$target"
litert_site=$("$target/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$main_site')" > "$litert_site/zz_main_environment.pth"
"$target/bin/python" -m pip install --quiet -c "$held" "litert-torch>=0.10" "ai-edge-litert>=2.3"
"$target/bin/python" -m pip uninstall --quiet -y typing_extensions
"$target/bin/python" -c "import jupyter_client, typing_extensions; print('typing_extensions', typing_extensions.__file__)"
"$target/bin/python" -c "import ai_edge_litert, litert_torch, torch; print('LiteRT environment ready:', '$target', 'torch', torch.__version__)"
