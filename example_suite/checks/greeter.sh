#!/bin/sh
# Verifier for fix-greeting: the greeting must be spelt right. Usage: greeter.sh WORKSPACE
out=$(python3 "$1/greet.py" Ada)
echo "greet.py Ada -> $out"
[ "$out" = "Hello, Ada!" ]
