#!/bin/sh
cd /src && make -s >/logs/verifier/build.txt 2>&1 && [ "$(./sum 1 2 3 4 5)" = "sum=15" ]
if [ $? -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else cat /logs/verifier/build.txt; echo 0 > /logs/verifier/reward.txt; fi
