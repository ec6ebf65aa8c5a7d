#!/usr/bin/env bash
# Mutation score of the named modules: bash scripts/mutation.sh interp/stats.py [interp/patching.py ...]
#
# A benchmark, not part of the test suite (CI does not run it). For each module, mutmut (configured in
# pyproject.toml's [tool.mutmut]) mutates that module alone and runs, per mutant, the tests of the module's row in
# TESTS below that reach the mutated function; then the score is printed: killed / total, and every survivor.
# Each module runs in its own folder, .mutation/<module>/ (git-ignored; `mutmut show NAME` / `mutmut browse` work
# there), made afresh each time, so a run is never mixed with an earlier one. The source is copied when the run
# starts: edits made to the tree while it runs do not reach it.
#   MAX_CHILDREN=n  mutants run in parallel (default 2)
#   VENV=path       the virtual environment (default .venv; made by scripts/setup.sh when missing)
#   MUTATION_TESTS="files"  run these test files instead of the table's (e.g. a slow file, on a sample)
#   MUTANTS="names"  only these mutants (names or globs as `mutmut results` prints them; the score then counts
#                   the mutants run); with MUTATION_TESTS, a sample measured with other tests
#   MUTATION_PYTEST_ARGS="args"  more pytest arguments (e.g. -k "not llama")
#   TAG=name        the folder is .mutation/<module>.<name> (keeps a second run beside the first)
# Run it under `nice -n 19` on a shared machine. docs/testing.md has the scores and the equivalent mutants.
set -euo pipefail

main() {  # the whole script is read before it runs: editing the file during a run cannot change that run
cd "$(dirname "$0")/.."
ROOT=$PWD

# module -> the test files its mutants run (fast ones: each mutant runs its tests from a fresh pytest, so
# fixtures that train a model would be paid once per mutant)
declare -A TESTS=(
  [interp/stats.py]="tests/interp/test_stats.py tests/interp/test_stats_mutants.py tests/experiments/test_referee_rule.py"
  [interp/faithfulness.py]="tests/interp/test_faithfulness_mutants.py"
  [interp/patching.py]="tests/interp/test_patching_mutants.py"
  [interp/compare.py]="tests/interp/test_compare_circuits.py"
  [experiments/run/claims.py]="tests/experiments/test_claims.py"
  [experiments/run/contrasts.py]="tests/experiments/test_record.py tests/experiments/test_claims.py"  # not yet worked: to check
)
# extra pytest arguments per module (e.g. -k to leave out tests that need trained fixtures)
declare -A PYTEST_ARGS=()

if [ $# -eq 0 ]; then
  echo "usage: bash scripts/mutation.sh MODULE... (one of: ${!TESTS[*]})" >&2
  exit 2
fi

VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || bash scripts/setup.sh
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -c "import mutmut" 2>/dev/null || python -m pip install -q "mutmut>=3.8,<4"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

summary=()
for arg in "$@"; do
  mod=${arg//.//}; mod=${mod%/py}; mod=${mod#./}.py  # interp/stats.py, interp.stats and interp/stats all name it
  if [ -z "${TESTS[$mod]+x}" ]; then
    echo "no test files for $arg in scripts/mutation.sh's table (TESTS)" >&2
    exit 2
  fi
  tests=()
  for t in ${MUTATION_TESTS:-${TESTS[$mod]}}; do
    if [ -e "$t" ]; then tests+=("$t"); else echo "   ($t does not exist: left out)"; fi
  done
  [ ${#tests[@]} -gt 0 ] || { echo "none of ${TESTS[$mod]} exists" >&2; exit 2; }
  work=$ROOT/.mutation/$(echo "${mod%.py}" | tr / .)${TAG:+.$TAG}
  rm -rf "$work"
  mkdir -p "$work/mutants"
  for d in interp tasks experiments tests; do ln -s "$ROOT/$d" "$work/$d"; done
  ln -s "$ROOT/checkpoints" "$work/mutants/checkpoints"  # the shipped tokenizer, read by tests/conftest.py
  # this module and its tests in pyproject.toml's [tool.mutmut] (the rest of the file as it is: pytest's settings)
  python - "$ROOT/pyproject.toml" "$work/pyproject.toml" "$mod" "${tests[@]}" <<'EOF'
import json, re, sys, tomllib
src, dst, mod, *tests = sys.argv[1:]
text = open(src).read()
conf = tomllib.loads(text)["tool"]["mutmut"]
conf["only_mutate"] = [mod]
conf["pytest_add_cli_args_test_selection"] = tests
section = "[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in conf.items())
start = text.index("[tool.mutmut]")
nxt = re.search(r"^\[", text[start + 1:], re.M)
open(dst, "w").write(text[:start] + section + (text[start + 1 + nxt.start():] if nxt else ""))
EOF
  extra="${PYTEST_ARGS[$mod]:-} ${MUTATION_PYTEST_ARGS:-}"
  if [ -n "${extra// /}" ]; then  # appended to the per-module pytest arguments
    python - "$work/pyproject.toml" "$extra" <<'EOF'
import json, re, shlex, sys
path, extra = sys.argv[1], shlex.split(sys.argv[2])
text = open(path).read()
m = re.search(r"^pytest_add_cli_args = (.*)$", text, re.M)
args = json.loads(m.group(1)) + extra
open(path, "w").write(text[:m.start()] + f"pytest_add_cli_args = {json.dumps(args)}" + text[m.end():])
EOF
  fi
  echo "== $mod: mutants run ${tests[*]} (folder $work)"
  start=$(date +%s)
  (cd "$work" && mutmut run --max-children "${MAX_CHILDREN:-2}" ${MUTANTS:-} >"$work/run.log" 2>&1) || {
    tail -30 "$work/run.log"; echo "mutmut failed on $mod (log: $work/run.log)" >&2; exit 1; }
  (cd "$work" && mutmut results --all true >"$work/results.txt")
  line=$(python - "$work/results.txt" "$mod" "$(( $(date +%s) - start ))" <<'EOF'
import collections, sys
path, mod, secs = sys.argv[1:]
status = {}
for row in open(path):
    name, _, st = row.strip().rpartition(": ")
    if name:
        status[name] = st
status = {n: st for n, st in status.items() if st != "not checked"}  # MUTANTS: the others were not run
count = collections.Counter(status.values())
dead = ("killed", "timeout", "caught by type check", "segfault")  # a crash or a hang fails the tests too
killed = sum(count[s] for s in dead)
total = len(status)
survivors = sorted(n for n, s in status.items() if s not in dead)
print(f"{mod}: {killed} / {total} killed ({100 * killed / max(total, 1):.1f}%), "
      + ", ".join(f"{k} {v}" for k, v in sorted(count.items())) + f"; {secs} s")
for n in survivors:
    print(f"  {status[n]:9s} {n}")
EOF
)
  echo "$line"
  summary+=("$line")
done
echo
echo "== mutation scores (survivors: cd .mutation/<module> && mutmut show NAME)"
printf '%s\n' "${summary[@]}"
}

main "$@"
