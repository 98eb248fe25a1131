#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the source that the `llama-cpp-python` sdist on the package index vendors
# (vendor/llama.cpp, with tools/server), once per version, into a cache; prints the binary's path on the last line.
#   scripts/build_llama_server.sh            build (or reuse) and print the path
# Settings (environment): LLAMA_CPP_PYTHON_VERSION (default 0.3.36), LIGHTNING_SPLIT_CACHE (default
# ~/.cache/lightning_split), PIP (default: .venv/bin/pip, else pip), JOBS (default: number of cores).
# About 9 minutes on 2 cores. The build happens in a temporary folder and is moved into the cache only when it
# succeeded, so an interrupted build is never reused.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${LIGHTNING_SPLIT_CACHE:-$HOME/.cache/lightning_split}/llama-server/$version"
binary="$cache/bin/llama-server"
if [[ -x "$binary" ]] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi
pip="${PIP:-}"
if [[ -z "$pip" ]]; then
  if [[ -x .venv/bin/pip ]]; then pip=.venv/bin/pip; else pip=pip; fi
fi
jobs="${JOBS:-$(nproc)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "building llama-server from llama-cpp-python $version (about 9 min on 2 cores) in $work" >&2
"$pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work/sdist" >&2
tar -xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
# ninja prints one line per compiled file, which is the progress of the build
cmake --build "$work/build" --target llama-server -j "$jobs" >&2
mkdir -p "$(dirname "$cache")"
staged="$cache.partial.$$"
rm -rf "$staged"
mkdir -p "$staged/bin"
cp "$work/build/bin/llama-server" "$staged/bin/"
rm -rf "$cache"
mv "$staged" "$cache"
"$binary" --version >&2
echo "$binary"
