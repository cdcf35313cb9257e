/* The core of the C ABI: versions, status names, error accessors and frees with NULL. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

static void test_versions(void)
{
    char expected[64];
    CHECK(cfs_version() != NULL);
    CHECK_STR(cfs_version(), CFS_VERSION_STRING);
    snprintf(expected, sizeof expected, "%d.%d.%d", CFS_VERSION_MAJOR, CFS_VERSION_MINOR, CFS_VERSION_PATCH);
    /* The string may carry a pre-release suffix after MAJOR.MINOR.PATCH. */
    CHECK(strncmp(CFS_VERSION_STRING, expected, strlen(expected)) == 0);
    CHECK(cfs_abi_version() == CFS_ABI_VERSION);
    CHECK(CFS_ABI_VERSION == 0);
}

static void test_status_names(void)
{
    /* The numbers are ABI: fixed forever. */
    CHECK(CFS_OK == 0);
    CHECK(CFS_STATUS_INVALID_ARGUMENT == 1);
    CHECK(CFS_STATUS_NULL_ARGUMENT == 2);
    CHECK(CFS_STATUS_IO == 3);
    CHECK(CFS_STATUS_FORMAT == 4);
    CHECK(CFS_STATUS_UNSUPPORTED == 5);
    CHECK(CFS_STATUS_CANCELLED == 6);
    CHECK(CFS_STATUS_INTERNAL == 7);
    CHECK(CFS_STATUS_NOT_FOUND == 8);
    CHECK_STR(cfs_status_name(CFS_OK), "CFS_OK");
    CHECK_STR(cfs_status_name(CFS_STATUS_NULL_ARGUMENT), "CFS_STATUS_NULL_ARGUMENT");
    CHECK_STR(cfs_status_name(CFS_STATUS_FORMAT), "CFS_STATUS_FORMAT");
    CHECK_STR(cfs_status_name(CFS_STATUS_PERMISSION_DENIED), "CFS_STATUS_PERMISSION_DENIED");
    CHECK_STR(cfs_status_name(9999), "CFS_STATUS_UNKNOWN");
    CHECK_STR(cfs_status_name(-1), "CFS_STATUS_UNKNOWN");
}

static void test_error_accessors_with_null(void)
{
    CHECK(cfs_error_status(NULL) == CFS_STATUS_NULL_ARGUMENT);
    CHECK(cfs_error_message(NULL) != NULL);
    CHECK_STR(cfs_error_message(NULL), "");
    CHECK(cfs_error_os_error(NULL) == 0);
    cfs_error_free(NULL);
    cfs_string_free(NULL);
    CHECK(1); /* the frees of NULL returned */
}

int main(void)
{
    test_versions();
    test_status_names();
    test_error_accessors_with_null();
    return harness_summary("test_core");
}
