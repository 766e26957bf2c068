// The header must also compile as C++ (cpp_compat): extern "C", no C-only
// constructs. Compiled with -fsyntax-only by the test script.
#include "tidelog.h"

static_assert(TIDELOG_ABI_VERSION >= 1, "ABI version");
static_assert(TIDELOG_OK == 0, "TIDELOG_OK is 0");

int main() {
    tidelog_db *db = nullptr;
    return tidelog_open("x", "{}", &db) == TIDELOG_OK ? 0 : 1;
}
