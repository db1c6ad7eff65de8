#!/usr/bin/env bash
# The work of one trial per iteration, done by hand (the baseline of figure 2):
# copy the fixture, git init/add/commit, run the agent, git diff, run verify,
# write meta/verify/metrics JSON.
# usage: baseline_trials.sh FIXTURE OUTDIR N [BWRAP]
# With BWRAP (the path of a bwrap), the agent and verify steps each run in bwrap with the view
# a sandboxed step gets (the system read-only, a private /tmp with the workspace at
# /tmp/workspace, the artifacts (and verifier) directory writable, its own PID namespace, no
# capability): issue 23's "the same loop with each step in bwrap".
set -eu
fixture=$(realpath "$1"); mkdir -p "$2"; out=$(realpath "$2"); n=$3; bwrap=${4:-}
step() {  # step DIR WRITABLE...: run `sh -c true` as a step, in bwrap when asked
  local d=$1; shift
  if [ -z "$bwrap" ]; then true; return; fi
  local args=(--dev /dev --proc /proc --tmpfs /tmp --dir /tmp/home)
  local x
  for x in /usr /etc /opt /sys; do [ -d "$x" ] && args+=(--ro-bind "$x" "$x"); done
  for x in /bin /lib /lib64 /sbin; do
    if [ -L "$x" ]; then args+=(--symlink "$(readlink "$x")" "$x"); elif [ -d "$x" ]; then args+=(--ro-bind "$x" "$x"); fi
  done
  args+=(--bind "$d/workspace" /tmp/workspace --ro-bind "$d" "$d")
  for x in "$@"; do args+=(--bind "$x" "$x"); done
  "$bwrap" "${args[@]}" --remount-ro / --unshare-pid --die-with-parent --new-session \
    --cap-drop ALL --chdir /tmp/workspace -- /bin/sh -c true
}
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@localhost GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@localhost

for ((i = 1; i <= n; i++)); do
  d=$out/$(printf '%03d' "$i")
  mkdir -p "$d/artifacts" "$d/verifier"
  printf '{"status": "running", "trial": %d}\n' "$i" > "$d/meta.json"
  printf 'Do the thing.\n' > "$d/prompt.md"
  cp -r "$fixture" "$d/workspace"
  (
    cd "$d/workspace"
    git init -q
    git add -A
    git commit -q -m snapshot
    step "$d" "$d/artifacts" > "$d/stdout.txt" 2>&1                      # the agent
    git add -A
    git diff --cached HEAD > "$d/workspace.diff"
    step "$d" "$d/artifacts" "$d/verifier" > "$d/verifier/verify-output.txt" 2>&1  # verify
  )
  printf '{"status": "passed", "exit_code": 0, "reward": 1.0, "passed": true}\n' > "$d/verify.json"
  printf '{"duration": 0.02, "agent_duration": 0.001, "verify_duration": 0.001}\n' > "$d/metrics.json"
  printf '{"status": "passed", "trial": %d, "success": true}\n' "$i" > "$d/meta.json"
done
