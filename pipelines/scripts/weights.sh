#!/usr/bin/env bash
# `command` traffic provider for the Shops example: records the weights it is given.
#   weights.sh ROUTE STACK=WEIGHT ...
set -euo pipefail
route=$1; shift
dir="${WORKBENCH_WORKSPACE:-.}/.workbench/demo/traffic"
mkdir -p "$dir"
echo "$*" > "$dir/$route.tmp" && mv "$dir/$route.tmp" "$dir/$route.weights"
echo "route $route: $*"
