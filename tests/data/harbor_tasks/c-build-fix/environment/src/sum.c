#include <stdio.h>

int main(int argc, char **argv) {
    long total = 0;
    for (int i = 1; i < argc; i++)
        total += atol(argv[i]);
    printf("sum=%ld\n", total)
    return 0;
}
