// The header compiles as C++ and links from a C++ program (extern "C", no C-only constructs).
#include <composefs-storage.h>

#include <cstdio>
#include <cstring>

int main()
{
    cfs_error *err = nullptr;
    cfs_error_free(err);
    bool ok = std::strcmp(cfs_version(), CFS_VERSION_STRING) == 0 && cfs_abi_version() == CFS_ABI_VERSION &&
              cfs_error_status(nullptr) == CFS_STATUS_NULL_ARGUMENT;
    std::printf("cxx_compat: %d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
    return ok ? 0 : 1;
}
