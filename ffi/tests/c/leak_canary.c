/* Leaks on purpose: the test script checks that LeakSanitizer reports it,
 * so a "no leaks" result from the real tests means something. */
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *p = malloc(64);
    if (p == NULL)
        return 2;
    strcpy(p, "leaked on purpose");
    p = NULL;
    return 0;
}
