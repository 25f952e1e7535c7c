#!/usr/bin/env bash
# Confab's offline infrastructure checks (called by `make test`).
#
#   bash infra/checks/run.sh            # every check
#   bash infra/checks/run.sh cfn-lint   # only the named checks
#
# Installs its tools only when missing: Python tools into a venv
# ($CONFAB_INFRA_VENV, default $HOME/.cache/confab/infra-venv, pinned by requirements.txt)
# and shellcheck from apt. Once installed, nothing here touches the network.
# Exits non-zero when any check fails; the last line is a one-line summary.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECKS="$ROOT/infra/checks"
VENV="${CONFAB_INFRA_VENV:-$HOME/.cache/confab/infra-venv}"
REQUIREMENTS="$CHECKS/requirements.txt"
cd "$ROOT" || exit 1

# --- tools ----------------------------------------------------------------------------

install_python_tools() {
  local stamp="$VENV/.confab-requirements.sha256" want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "infra checks: installing tools into $VENV" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" || return 1
  fi
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQUIREMENTS" >&2 || return 1
  echo "$want" >"$stamp"
}

install_shellcheck() {
  command -v shellcheck >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "infra checks: installing shellcheck (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1; }
  fi
  command -v shellcheck >/dev/null
}

if ! install_python_tools; then
  echo "infra checks: FAILED to install Python tools (offline and not installed yet?)" >&2
  exit 1
fi
install_shellcheck || echo "infra checks: shellcheck unavailable; the shell check will fail" >&2
export PATH="$VENV/bin:$PATH"
PY="$VENV/bin/python"

# Checkov and friends: never phone home.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export PYTHONWARNINGS=ignore

# --- checks ---------------------------------------------------------------------------

shopt -s nullglob globstar
TEMPLATES=(infra/aws/*.yaml)
DOCKERFILES=(infra/**/Dockerfile)
WORKFLOWS=(.github/workflows/*.yml)
SCRIPTS=(infra/**/*.sh)
COMPOSE=(infra/docker-compose.y*ml)
shopt -u nullglob

# Files this check suite exists to guard: a deleted one must fail, not skip.
REQUIRED=(
  infra/checks/requirements.txt
  services/telemetry/src/metrics_names.rs
  infra/docker/Dockerfile .dockerignore
  infra/aws/bootstrap.yaml infra/aws/confab.yaml
  infra/grafana/Dockerfile infra/grafana/dashboards/confab-overview.json
  .github/workflows/ci.yml .github/workflows/deploy.yml infra/ecs/fill.py
  infra/docker-compose.yml
  infra/mesh/run-mesh.sh infra/mesh/stop-mesh.sh infra/mesh/smoke.sh infra/mesh/lib.sh infra/mesh/fake_openai.py
)
ECS_SERVICES=(gateway chat conversation files ratelimit grafana)

check_required() {
  local missing=0 f
  for f in "${REQUIRED[@]}"; do
    [[ -e "$f" ]] || { echo "missing: $f"; missing=1; }
  done
  for svc in "${ECS_SERVICES[@]}"; do
    [[ -e "infra/ecs/$svc.json" ]] || { echo "missing: infra/ecs/$svc.json"; missing=1; }
  done
  return "$missing"
}

# A check with nothing to look at is skipped (exit 3); `required` turns absence into failure.
SKIPPED=3
none() { [[ $# -eq 0 ]]; }

check_cfn_lint() {
  none "${TEMPLATES[@]}" && return "$SKIPPED"
  cfn-lint --format parseable -- "${TEMPLATES[@]}"
}

check_checkov() {
  local out rc
  none "${TEMPLATES[@]}" && return "$SKIPPED"
  out="$(checkov --quiet --compact --skip-download --framework cloudformation \
    --config-file "$CHECKS/checkov.yaml" -d infra/aws 2>&1)"
  rc=$?
  # Checkov reports a template it cannot parse and still exits 0.
  if grep -qiE "parsing errors: [1-9]|error parsing|failed to parse" <<<"$out"; then
    echo "$out"
    echo "checkov: a template did not parse"
    return 1
  fi
  [[ $rc == 0 ]] || echo "$out"
  return "$rc"
}

check_hadolint() {
  none "${DOCKERFILES[@]}" && return "$SKIPPED"
  hadolint --no-color --config "$CHECKS/hadolint.yaml" "${DOCKERFILES[@]}"
}

check_actionlint() {
  none "${WORKFLOWS[@]}" && return "$SKIPPED"
  actionlint -no-color "${WORKFLOWS[@]}"
}

check_workflow_schema() {
  none "${WORKFLOWS[@]}" && return "$SKIPPED"
  check-jsonschema --builtin-schema vendor.github-workflows "${WORKFLOWS[@]}"
}

check_compose_schema() {
  none "${COMPOSE[@]}" && return "$SKIPPED"
  check-jsonschema --builtin-schema vendor.compose-spec "${COMPOSE[@]}"
}

check_shellcheck() {
  none "${SCRIPTS[@]}" && return "$SKIPPED"
  shellcheck --external-sources --severity=style "${SCRIPTS[@]}"
}

check_ecs_render() { "$PY" "$CHECKS/checks.py" ecs-render; }
check_taskdefs() { "$PY" "$CHECKS/checks.py" taskdefs; }
check_metrics() { "$PY" "$CHECKS/checks.py" metrics; }
check_grafana() { "$PY" "$CHECKS/checks.py" grafana; }
check_adot() { "$PY" "$CHECKS/checks.py" adot; }

ALL=(required cfn-lint checkov hadolint actionlint workflow-schema compose-schema shellcheck
  ecs-render taskdefs metrics grafana adot)
SELECTED=("$@")
[[ ${#SELECTED[@]} -gt 0 ]] || SELECTED=("${ALL[@]}")

passed=() failed=() skipped=()
started=$SECONDS
for name in "${SELECTED[@]}"; do
  fn="check_${name//-/_}"
  if ! declare -F "$fn" >/dev/null; then
    echo "unknown check: $name (known: ${ALL[*]})" >&2
    failed+=("$name")
    continue
  fi
  t0=$SECONDS
  output="$("$fn" 2>&1)"
  rc=$?
  if [[ $rc == 0 ]]; then
    printf '  ok   %-16s %3ss\n' "$name" "$((SECONDS - t0))"
    passed+=("$name")
  elif [[ $rc == "$SKIPPED" ]]; then
    printf '  skip %-16s (nothing to check)\n' "$name"
    skipped+=("$name")
  else
    printf '  FAIL %-16s %3ss\n' "$name" "$((SECONDS - t0))"
    while IFS= read -r line; do printf '       | %s\n' "$line"; done <<<"$output"
    failed+=("$name")
  fi
done

elapsed=$((SECONDS - started))
if [[ ${#failed[@]} -eq 0 ]]; then
  echo "infra checks: ${#passed[@]} passed, 0 failed, ${#skipped[@]} skipped in ${elapsed}s"
else
  echo "infra checks: ${#passed[@]} passed, ${#failed[@]} failed (${failed[*]}) in ${elapsed}s"
  exit 1
fi
