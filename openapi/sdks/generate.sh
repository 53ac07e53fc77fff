#!/usr/bin/env bash
# Generates wagate's API clients from the committed spec (openapi/openapi.yaml):
#   generated/python      the `wagate_client` package (openapi-python-client)
#   generated/typescript  a Fetch API client (@hey-api/openapi-ts)
# The generators are pinned in requirements.txt and package.json/package-lock.json; this script
# installs nothing beyond `npm ci` of that lock file. The generated code is never committed.
# Everything the generators print goes to this script's stdout/stderr, so callers (the `sdks`
# integration test) can check it for warnings.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
spec="$here/../openapi.yaml"
out="$here/generated"

if ! command -v openapi-python-client >/dev/null; then
  echo "openapi-python-client is not installed: pip install -r $here/requirements.txt" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are not installed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi

wanted="$(sed -n 's/^openapi-python-client==//p' "$here/requirements.txt")"
found="$(openapi-python-client --version | awk '{print $NF}')"
if [ "$found" != "$wanted" ]; then
  echo "openapi-python-client $found is installed, $wanted is pinned: pip install -r $here/requirements.txt" >&2
  exit 1
fi

if [ ! -x "$here/node_modules/.bin/openapi-ts" ]; then
  echo "== npm ci (openapi/sdks)"
  (cd "$here" && npm ci --no-audit --no-fund)
fi

mkdir -p "$out"

echo "== python: openapi-python-client $found"
# `--meta none` writes just the package, importable once generated/python is on sys.path.
# Run from $here so relative paths in the config and the post-hooks (ruff) stay inside it.
(cd "$here" && openapi-python-client generate \
  --path "$spec" \
  --config "$here/openapi-python-client.yaml" \
  --meta none \
  --output-path "$out/python/wagate_client" \
  --overwrite)

echo "== typescript: @hey-api/openapi-ts $(cd "$here" && node -p 'require("@hey-api/openapi-ts/package.json").version')"
(cd "$here" && ./node_modules/.bin/openapi-ts --file "$here/openapi-ts.config.mjs")

echo "generated: $out/python/wagate_client $out/typescript"
