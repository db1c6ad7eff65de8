#!/bin/sh
grep -c ERROR /work/app.log > /work/report.txt
