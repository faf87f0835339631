#!/usr/bin/env bash
# The pipeline of a Backworks plugin repository: build the plugin for each
# target, gate on the ABI check, sign, and (optionally) prove the build
# reproduces. It runs the same in GitHub Actions (ci/github/backworks-plugin.yml)
# as on a laptop; it needs `cargo backworks` on PATH and, for cross targets,
# what `cargo backworks build` names when they are missing.
#
# Usage: ci/plugin-pipeline.sh [--target TRIPLE]... [--dist DIR] [--reproduce]
#   --target     a target to build (repeatable) [default: $BACKWORKS_TARGETS
#                (space-separated), else [package.metadata.backworks] targets,
#                else the host]
#   --dist       where the libraries, .minisig files, SHA256SUMS,
#                manifest.json and check.json go [default: dist]
#   --reproduce  rebuild in a clean temporary checkout and compare hashes
# Environment:
#   BACKWORKS_SIGNING_KEY   the secret key file's text (a CI secret); without
#                           it nothing is signed
#   BACKWORKS_KEY_PASSWORD  its password, when it has one
# Exit codes: those of `cargo backworks` (1 invalid plugin or not
# reproduced, 2 usage/IO/key, 3 cargo failed, 4 a tool is missing).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
say() { printf 'plugin-pipeline: %s\n' "$*" >&2; }

targets=()
dist="dist"
reproduce=false
while [ $# -gt 0 ]; do
    case "$1" in
        --target) [ $# -ge 2 ] || { say "--target needs a value"; exit 2; }; targets+=("$2"); shift 2 ;;
        --dist) [ $# -ge 2 ] || { say "--dist needs a value"; exit 2; }; dist="$2"; shift 2 ;;
        --reproduce) reproduce=true; shift ;;
        -h|--help) usage; exit 0 ;;
        *) say "unknown argument \`$1\` (see --help)"; exit 2 ;;
    esac
done
if [ ${#targets[@]} -eq 0 ] && [ -n "${BACKWORKS_TARGETS:-}" ]; then
    read -ra targets <<< "$BACKWORKS_TARGETS"
fi
if ! cargo backworks --version >/dev/null 2>&1; then
    say "\`cargo backworks\` is missing: install it with \`cargo install --locked --git <backworks repository> cargo-backworks\`"
    exit 2
fi

build=(build --release --dist-dir "$dist")
if [ -f Cargo.lock ]; then
    build+=(--locked)
else
    say "no Cargo.lock: commit one so that builds (and rebuilds) use the same dependencies"
fi
for target in ${targets[@]+"${targets[@]}"}; do
    build+=(--target "$target")
done
if [ -n "${BACKWORKS_SIGNING_KEY:-}" ]; then
    build+=(--sign-key-env BACKWORKS_SIGNING_KEY)
    [ -n "${BACKWORKS_KEY_PASSWORD:-}" ] && build+=(--password-env BACKWORKS_KEY_PASSWORD)
else
    say "BACKWORKS_SIGNING_KEY is not set: the libraries are not signed"
fi

say "cargo backworks ${build[*]}"
cargo backworks "${build[@]}"

# The ABI gate: every library must be a valid plugin for its target. The
# report is kept as a build artifact.
libraries=()
while IFS= read -r -d '' library; do
    libraries+=("$library")
done < <(find "$dist" -type f \( -name '*.so' -o -name '*.dll' -o -name '*.dylib' \) -print0 | sort -z)
if [ ${#libraries[@]} -eq 0 ]; then
    say "no library in $dist"
    exit 1
fi
report="$dist/check.json"
status=0
cargo backworks check --json "${libraries[@]}" > "$report.tmp" || status=$?
mv "$report.tmp" "$report"
if [ "$status" -ne 0 ]; then
    say "the ABI check failed (exit $status): see $report"
    exit "$status"
fi
say "ABI check passed for ${#libraries[@]} libraries ($report)"

if $reproduce; then
    cargo backworks reproduce --build-manifest "$dist/manifest.json"
fi
say "done: $dist"
