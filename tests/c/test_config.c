// requires: cfs_config_load cfs_config_load_file cfs_config_check
/* The containers-storage.conf C API: loading (a sample file, an injected root), values, JSON,
 * findings, error paths (native TOML bool, syntax error, missing file) and NULL arguments. */
#define _DEFAULT_SOURCE /* mkdtemp, setenv */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[4096];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static bool contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static void check_string(const cfs_config *cfg, const char *key, const char *want)
{
    char *value = NULL;
    cfs_error *err = NULL;
    cfs_status st = cfs_config_get_string(cfg, key, &value, &err);
    check_ok(__FILE__, __LINE__, key, st, err);
    if (value == NULL || strcmp(value, want) != 0) {
        harness_failed++;
        fprintf(stderr, "FAILED: %s is \"%s\", expected \"%s\"\n", key, value ? value : "(null)", want);
    } else {
        harness_passed++;
    }
    cfs_string_free(value);
}

static void check_bool(const cfs_config *cfg, const char *key, bool want)
{
    bool value = !want;
    cfs_error *err = NULL;
    cfs_status st = cfs_config_get_bool(cfg, key, &value, &err);
    check_ok(__FILE__, __LINE__, key, st, err);
    if (value != want) {
        harness_failed++;
        fprintf(stderr, "FAILED: %s is %d, expected %d\n", key, value, want);
    } else {
        harness_passed++;
    }
}

/* tests/data/sample-storage.conf: overlay with composefs, two mistakes for the check to find. */
static void test_sample_file(void)
{
    char path[4096];
    const char *data = getenv("CFS_TEST_DATA");
    cfs_config *cfg = NULL;
    cfs_error *err = NULL;
    char *json = NULL;
    cfs_status st;

    snprintf(path, sizeof path, "%s/sample-storage.conf", data ? data : "tests/data");
    st = cfs_config_load_file(path, &cfg, &err);
    check_ok(__FILE__, __LINE__, "cfs_config_load_file(sample)", st, err);
    if (cfg == NULL)
        return;
    check_string(cfg, "driver", "overlay");
    check_string(cfg, "graphroot", "/var/lib/containers/storage");
    check_string(cfg, "runroot", "/run/containers/storage");
    check_string(cfg, "mountopt", "nodev,metacopy=on");
    check_bool(cfg, "use_composefs", true);
    check_bool(cfg, "enable_partial_images", true);
    check_bool(cfg, "convert_images", false); /* "1" is not "true" for a pull option */
    check_bool(cfg, "use_hard_links", false);

    err = NULL;
    st = cfs_config_to_json(cfg, &json, &err);
    check_ok(__FILE__, __LINE__, "cfs_config_to_json", st, err);
    CHECK(json != NULL && json[0] == '{');
    CHECK(contains(json, "\"driver\"") && contains(json, "\"overlay\""));
    cfs_string_free(json);

    json = NULL;
    err = NULL;
    st = cfs_config_check(cfg, &json, &err);
    check_ok(__FILE__, __LINE__, "cfs_config_check", st, err);
    /* The sample's two mistakes are reported as findings. */
    CHECK(json != NULL && strncmp(json, "[{", 2) == 0);
    CHECK(contains(json, "\"severity\"") && contains(json, "\"code\"") && contains(json, "\"message\""));
    cfs_string_free(json);

    /* Unknown keys and a string key read as a bool are invalid arguments. */
    err = NULL;
    json = NULL;
    st = cfs_config_get_string(cfg, "no_such_key", &json, &err);
    check_failed(__FILE__, __LINE__, "get_string(no_such_key)", st, err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(json == NULL);
    {
        bool b = false;
        err = NULL;
        st = cfs_config_get_bool(cfg, "driver", &b, &err);
        check_failed(__FILE__, __LINE__, "get_bool(driver)", st, err, CFS_STATUS_INVALID_ARGUMENT);
    }
    cfs_config_free(cfg);
}

/* cfs_config_load with an injected root reads <root>/etc/containers/storage.conf. */
static void test_load_root(void)
{
    char path[4200];
    cfs_config *cfg = NULL;
    cfs_error *err = NULL;
    cfs_status st;

    snprintf(path, sizeof path, "%s/root", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/root/etc", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/root/etc/containers", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/root/etc/containers/storage.conf", dir);
    write_file(path, "[storage]\ndriver = \"overlay\"\ngraphroot = \"/srv/graph\"\n\n"
                     "[storage.options.overlay]\nuse_composefs = \"1\"\n");
    snprintf(path, sizeof path, "%s/root", dir);
    st = cfs_config_load(path, &cfg, &err);
    check_ok(__FILE__, __LINE__, "cfs_config_load(root)", st, err);
    if (cfg == NULL)
        return;
    check_string(cfg, "graphroot", "/srv/graph");
    check_bool(cfg, "use_composefs", true); /* "1": a Go ParseBool spelling */
    cfs_config_free(cfg);
}

static void test_errors(void)
{
    char path[4200];
    cfs_config *cfg = (cfs_config *)&cfg; /* a sentinel: outputs are written only on success */
    cfs_config *const sentinel = cfg;
    cfs_error *err = NULL;
    cfs_status st;

    /* A native TOML bool: CFS_STATUS_FORMAT naming the file, the line and the fix. */
    snprintf(path, sizeof path, "%s/native-bool.conf", dir);
    write_file(path, "[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nuse_composefs = true\n");
    st = cfs_config_load_file(path, &cfg, &err);
    CHECK(st == CFS_STATUS_FORMAT);
    CHECK(cfs_error_status(err) == CFS_STATUS_FORMAT);
    CHECK(contains(cfs_error_message(err), path));
    CHECK(contains(cfs_error_message(err), "line 4"));
    CHECK(contains(cfs_error_message(err), "use_composefs = \"true\""));
    CHECK(cfg == sentinel);
    cfs_error_free(err);

    /* A syntax error names file and line. */
    err = NULL;
    snprintf(path, sizeof path, "%s/syntax.conf", dir);
    write_file(path, "[storage]\ndriver = \"overlay\"\ngraphroot = \n");
    st = cfs_config_load_file(path, &cfg, &err);
    CHECK(st == CFS_STATUS_FORMAT);
    CHECK(contains(cfs_error_message(err), path) && contains(cfs_error_message(err), "line 3"));
    CHECK(cfg == sentinel);
    cfs_error_free(err);

    /* A missing file: CFS_STATUS_NOT_FOUND, with the errno. */
    err = NULL;
    snprintf(path, sizeof path, "%s/missing.conf", dir);
    st = cfs_config_load_file(path, &cfg, &err);
    CHECK(st == CFS_STATUS_NOT_FOUND);
    CHECK(cfs_error_status(err) == CFS_STATUS_NOT_FOUND && contains(cfs_error_message(err), "missing.conf"));
    CHECK(cfs_error_os_error(err) == ENOENT);
    CHECK(cfg == sentinel);
    cfs_error_free(err);

    /* err may be NULL: the status alone. */
    CHECK(cfs_config_load_file(path, &cfg, NULL) == CFS_STATUS_NOT_FOUND);
    CHECK(cfg == sentinel);
}

/* Each pointer argument NULL in turn, the others valid: CFS_STATUS_NULL_ARGUMENT, outputs untouched. */
static void test_null_arguments(void)
{
    char path[4200];
    cfs_config *cfg = NULL;
    cfs_error *err = NULL;
    char *s = (char *)&s;
    char *const s_sentinel = s;
    bool b = true;

    snprintf(path, sizeof path, "%s/ok.conf", dir);
    write_file(path, "[storage]\ndriver = \"overlay\"\n");
    CHECK_OK(cfs_config_load_file(path, &cfg, &err), err);
    if (cfg == NULL)
        return;

#define NULL_ARG(call)                                                                       \
    do {                                                                                     \
        cfs_error *e_ = NULL;                                                                \
        cfs_status st_ = (call);                                                             \
        check_failed(__FILE__, __LINE__, #call, st_, e_, CFS_STATUS_NULL_ARGUMENT);          \
    } while (0)

    NULL_ARG(cfs_config_load(dir, NULL, &e_));
    NULL_ARG(cfs_config_load_file(NULL, &cfg, &e_));
    NULL_ARG(cfs_config_load_file(path, NULL, &e_));
    NULL_ARG(cfs_config_get_string(NULL, "driver", &s, &e_));
    NULL_ARG(cfs_config_get_string(cfg, NULL, &s, &e_));
    NULL_ARG(cfs_config_get_string(cfg, "driver", NULL, &e_));
    NULL_ARG(cfs_config_get_bool(NULL, "use_composefs", &b, &e_));
    NULL_ARG(cfs_config_get_bool(cfg, NULL, &b, &e_));
    NULL_ARG(cfs_config_get_bool(cfg, "use_composefs", NULL, &e_));
    NULL_ARG(cfs_config_to_json(NULL, &s, &e_));
    NULL_ARG(cfs_config_to_json(cfg, NULL, &e_));
    NULL_ARG(cfs_config_check(NULL, &s, &e_));
    NULL_ARG(cfs_config_check(cfg, NULL, &e_));
    CHECK(s == s_sentinel);
    CHECK(b == true);
    /* The same with err NULL. */
    CHECK(cfs_config_get_string(cfg, NULL, &s, NULL) == CFS_STATUS_NULL_ARGUMENT);
    CHECK(cfs_config_check(NULL, &s, NULL) == CFS_STATUS_NULL_ARGUMENT);
    CHECK(s == s_sentinel);
    /* An empty path is an invalid argument, not a crash. */
    {
        cfs_config *c = NULL;
        cfs_error *e = NULL;
        cfs_status st = cfs_config_load_file("", &c, &e);
        check_failed(__FILE__, __LINE__, "load_file(\"\")", st, e, CFS_STATUS_INVALID_ARGUMENT);
        CHECK(c == NULL);
    }
    cfs_config_free(cfg);
    cfs_config_free(NULL);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char cmd[4200];

    /* Only the files these tests name: no environment overrides, no user file. */
    unsetenv("CONTAINERS_STORAGE_CONF");
    unsetenv("CONTAINERS_STORAGE_CONF_OVERRIDE");
    unsetenv("STORAGE_DRIVER");
    unsetenv("STORAGE_OPTS");
    snprintf(dir, sizeof dir, "%s/cfs-config-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(cmd, sizeof cmd, "%s/xdg", dir);
    setenv("XDG_CONFIG_HOME", cmd, 1);

    test_sample_file();
    test_load_root();
    test_errors();
    test_null_arguments();

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return harness_summary("test_config");
}
