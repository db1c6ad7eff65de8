#!/bin/sh
set -e
cd /src
sed -i 's/printf("sum=%ld\\n", total)$/printf("sum=%ld\\n", total);/' sum.c
sed -i 's/#include <stdio.h>/#include <stdio.h>\n#include <stdlib.h>/' sum.c
make -s
