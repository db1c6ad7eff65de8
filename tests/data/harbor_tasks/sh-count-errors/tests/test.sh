#!/bin/sh
# Harbor's JSON reward: a flat object of numbers, "reward" the main one.
expected=$(grep -c ERROR /work/app.log)
got=$(tr -d ' \n' < /work/report.txt 2>/dev/null)
if [ "$got" = "$expected" ]; then r=1; else r=0; fi
echo "expected $expected, got '$got'"
printf '{"reward": %s, "exact": %s}\n' "$r" "$r" > /logs/verifier/reward.json
