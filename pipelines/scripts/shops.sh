#!/usr/bin/env bash
# The Shops example's build steps: small, local, real. Each call does one step
# for one component inside the job's folder (GoCD's agent working directory).
#   shops.sh build|test|package|push QA|deploy ENV COMPONENT
set -euo pipefail
step=$1; shift
component=${!#}
src=${SHOPS_SRC:-$component}          # material checkout folder, when there is one
label=${GO_PIPELINE_LABEL:-dev}
state="${WORKBENCH_WORKSPACE:-.}/.workbench/demo"
mkdir -p "$state"

sources() {
  if [ -d "$src" ]; then echo "$src"; else mkdir -p "gen/$component"; echo "print('$component $label')" > "gen/$component/main.py"; echo "gen/$component"; fi
}

case "$step" in
  build)
    dir=$(sources)
    python3 -m py_compile $(find "$dir" -name '*.py')
    echo "built $component from $dir at label $label"
    ;;
  test)
    dir=$(sources)
    n=$(find "$dir" -name '*.py' | wc -l)
    mkdir -p test-reports
    cat > test-reports/junit.xml <<XML
<testsuite name="$component" tests="1" failures="0"><testcase classname="$component" name="compiles_${n}_files" time="0.01"/></testsuite>
XML
    echo "tests of $component passed ($n python files)"
    ;;
  package)
    dir=$(sources)
    mkdir -p dist
    tar czf "dist/shops-$component-$label.tar.gz" -C "$dir" .
    sha256sum "dist/shops-$component-$label.tar.gz"
    ;;
  push)
    repo=$1
    mkdir -p "$state/packages/$repo"
    echo "$component $label" >> "$state/packages/$repo/index.txt"
    echo "pushed shops-$component-$label to the $repo package repository"
    ;;
  deploy)
    env=$1
    mkdir -p "$state/stacks/$env"
    echo "$label" > "$state/stacks/$env/$component.version"
    echo "deployed $component $label to $env"
    ;;
  *)
    echo "unknown step $step" >&2; exit 2 ;;
esac
