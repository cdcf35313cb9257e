/* A minimal test harness for the C tests: CHECK records a pass or a failure and goes on;
 * harness_summary() prints "NAME: N passed, N failed" and gives the exit code. */
#ifndef CFS_TEST_HARNESS_H
#define CFS_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

#include <composefs-storage.h>

static int harness_passed;
static int harness_failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            harness_passed++;                                                        \
        } else {                                                                     \
            harness_failed++;                                                        \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                            \
    } while (0)

#define CHECK_STR(actual, expected)                                                  \
    do {                                                                             \
        const char *a_ = (actual), *e_ = (expected);                                 \
        if (a_ != NULL && strcmp(a_, e_) == 0) {                                     \
            harness_passed++;                                                        \
        } else {                                                                     \
            harness_failed++;                                                        \
            fprintf(stderr, "%s:%d: FAILED: %s is \"%s\", expected \"%s\"\n", __FILE__, \
                    __LINE__, #actual, a_ ? a_ : "(null)", e_);                      \
        }                                                                            \
    } while (0)

/* Checks that a call failed with `want`, that it filled *err with the same status and a message,
 * and frees the error. `what` names the call in failure messages. */
static inline void check_failed(const char *file, int line, const char *what, cfs_status got, cfs_error *err,
                         cfs_status want)
{
    int ok = got == want && err != NULL && cfs_error_status(err) == want && cfs_error_message(err)[0] != '\0';
    if (ok) {
        harness_passed++;
    } else {
        harness_failed++;
        fprintf(stderr, "%s:%d: FAILED: %s returned %s (error %s: \"%s\"), expected %s\n", file, line, what,
                cfs_status_name(got), err ? cfs_status_name(cfs_error_status(err)) : "NULL",
                cfs_error_message(err), cfs_status_name(want));
    }
    cfs_error_free(err);
}
/* The call runs before `err` is read (function arguments have no evaluation order). */
#define CHECK_FAILED(call, err, want)                                                \
    do {                                                                             \
        cfs_status st_ = (call);                                                     \
        check_failed(__FILE__, __LINE__, #call, st_, (err), (want));                 \
    } while (0)

/* Checks that a call succeeded and left *err NULL; on failure prints the error and frees it. */
static inline void check_ok(const char *file, int line, const char *what, cfs_status got, cfs_error *err)
{
    if (got == CFS_OK && err == NULL) {
        harness_passed++;
    } else {
        harness_failed++;
        fprintf(stderr, "%s:%d: FAILED: %s returned %s: %s\n", file, line, what, cfs_status_name(got),
                cfs_error_message(err));
    }
    cfs_error_free(err);
}
#define CHECK_OK(call, err)                                                          \
    do {                                                                             \
        cfs_status st_ = (call);                                                     \
        check_ok(__FILE__, __LINE__, #call, st_, (err));                             \
    } while (0)

static inline int harness_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, harness_passed, harness_failed);
    return harness_failed == 0 && harness_passed > 0 ? 0 : 1;
}

#endif
