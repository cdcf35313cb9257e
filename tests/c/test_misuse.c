// requires: cfs_layer_convert_path cfs_pull_options_set cfs_toc_generate_dump cfs_mount_options_set
// requires: cfs_layer_publish_metadata
/* The C boundary under misuse (issue #9): invalid UTF-8 in every text argument gets
 * CFS_STATUS_INVALID_ARGUMENT; paths are bytes, so non-UTF-8 paths work; zero-length buffers and
 * empty inputs get an error code; a freed, double-freed or wrong-type handle gets an error code
 * (the library keeps a registry of live handles, so it never reads freed memory: this test runs
 * clean under AddressSanitizer and valgrind). Never a crash. */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* Not UTF-8: a lone continuation byte, an overlong encoding and bytes that never occur. */
#define BAD "key-\x80\xc0\xaf\xfe\xff"

static char dir[4096];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* An empty tar: two zero blocks. */
static void write_empty_tar(const char *path)
{
    static const char zeros[1024];
    write_bytes(path, zeros, sizeof zeros);
}

static void test_invalid_utf8_text(void)
{
    char conf[4200], tar[4200], layer[4200];
    cfs_config *cfg = NULL;
    cfs_convert_options *copts = NULL;
    cfs_convert_result *res = NULL;
    cfs_pull_options *popts = NULL;
    cfs_mount_options *mopts = NULL;
    cfs_error *err = NULL;
    char *s = NULL;
    bool b = false;
    uint64_t u = 0;
    static const char toc[] = "{\"version\":1,\"entries\":[]}";

    path_in(conf, sizeof conf, "plain.conf");
    write_bytes(conf, "[storage]\ndriver = \"overlay\"\n", 29);
    CHECK_OK(cfs_config_load_file(conf, &cfg, &err), err);
    if (cfg != NULL) {
        err = NULL;
        CHECK_FAILED(cfs_config_get_string(cfg, BAD, &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
        CHECK(s == NULL);
        err = NULL;
        CHECK_FAILED(cfs_config_get_bool(cfg, BAD, &b, &err), err, CFS_STATUS_INVALID_ARGUMENT);
        /* An empty key is no key. */
        err = NULL;
        CHECK_FAILED(cfs_config_get_string(cfg, "", &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
        CHECK(s == NULL);
    }
    cfs_config_free(cfg);

    err = NULL;
    CHECK_OK(cfs_convert_options_new(&copts, &err), err);
    err = NULL;
    CHECK_FAILED(cfs_convert_options_set_verity(copts, BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    path_in(tar, sizeof tar, "empty.tar");
    write_empty_tar(tar);
    path_in(layer, sizeof layer, "utf8-layer");
    err = NULL;
    CHECK_OK(cfs_layer_convert_path(tar, layer, copts, &res, &err), err);
    if (res != NULL) {
        err = NULL;
        CHECK_FAILED(cfs_convert_result_get_u64(res, BAD, &u, &err), err, CFS_STATUS_INVALID_ARGUMENT);
        err = NULL;
        CHECK_OK(cfs_convert_result_get_u64(res, "entries", &u, &err), err);
        /* The gzip tar-split is made on the first call and kept: the same bytes every time. */
        const uint8_t *ts = NULL, *again = NULL;
        size_t ts_len = 0, again_len = 0;
        err = NULL;
        CHECK_OK(cfs_convert_result_tar_split(res, &ts, &ts_len, &err), err);
        err = NULL;
        CHECK_OK(cfs_convert_result_tar_split(res, &again, &again_len, &err), err);
        CHECK(ts != NULL && ts_len > 2 && ts[0] == 0x1f && ts[1] == 0x8b);
        CHECK(again == ts && again_len == ts_len);
    }
    cfs_convert_result_free(res);
    cfs_convert_options_free(copts);

    err = NULL;
    CHECK_OK(cfs_pull_options_new(&popts, &err), err);
    err = NULL;
    CHECK_FAILED(cfs_pull_options_set(popts, BAD, "true", &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_pull_options_set(popts, "hardlinks", BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_pull_options_set(popts, "annotations", BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_pull_options_set(popts, "expected_diff_id", BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_pull_options_free(popts);

    err = NULL;
    CHECK_OK(cfs_mount_options_new(&mopts, &err), err);
    err = NULL;
    CHECK_FAILED(cfs_mount_options_set(mopts, BAD, "x", &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_mount_options_set(mopts, "verity", BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_mount_options_set(mopts, "flatten", BAD, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_mount_options_free(mopts);

    err = NULL;
    CHECK_FAILED(cfs_toc_generate_dump((const uint8_t *)toc, strlen(toc), BAD, -1, &err), err,
                 CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_toc_read(tar, BAD, &s, &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(s == NULL);
}

/* Linux paths are bytes: every path argument takes non-UTF-8 names. */
static void test_non_utf8_paths_work(void)
{
    char conf[4200], root[4200], tar[4200], layer[4200], layer2[4200];
    cfs_config *cfg = NULL;
    cfs_convert_options *copts = NULL;
    cfs_convert_result *res = NULL;
    cfs_pull_options *popts = NULL;
    cfs_mount_options *mopts = NULL;
    cfs_error *err = NULL;
    char *s = NULL;

    path_in(conf, sizeof conf, "conf-\xff\xfe.conf");
    write_bytes(conf, "[storage]\ndriver = \"overlay\"\n", 29);
    CHECK_OK(cfs_config_load_file(conf, &cfg, &err), err);
    if (cfg != NULL) {
        err = NULL;
        CHECK_OK(cfs_config_get_string(cfg, "driver", &s, &err), err);
        CHECK_STR(s, "overlay");
        cfs_string_free(s);
        s = NULL;
    }
    cfs_config_free(cfg);
    cfg = NULL;

    /* An injected root with no storage.conf: the defaults. */
    path_in(root, sizeof root, "root-\x80");
    mkdir(root, 0755);
    err = NULL;
    CHECK_OK(cfs_config_load(root, &cfg, &err), err);
    cfs_config_free(cfg);

    path_in(tar, sizeof tar, "in-\xe9\xff.tar");
    write_empty_tar(tar);
    path_in(layer, sizeof layer, "layer-\xfe");
    err = NULL;
    CHECK_OK(cfs_layer_convert_path(tar, layer, NULL, &res, &err), err);
    CHECK(exists(layer));
    cfs_convert_result_free(res);
    res = NULL;

    /* The converted layer as a source layer of another conversion. */
    err = NULL;
    CHECK_OK(cfs_convert_options_new(&copts, &err), err);
    err = NULL;
    CHECK_OK(cfs_convert_options_add_source_layer(copts, layer, &err), err);
    path_in(layer2, sizeof layer2, "layer2-\xc0\xaf");
    err = NULL;
    CHECK_OK(cfs_layer_convert_path(tar, layer2, copts, &res, &err), err);
    CHECK(exists(layer2));
    cfs_convert_result_free(res);
    cfs_convert_options_free(copts);

    err = NULL;
    CHECK_OK(cfs_pull_options_new(&popts, &err), err);
    err = NULL;
    CHECK_OK(cfs_pull_options_set(popts, "source_layer", layer, &err), err);
    cfs_pull_options_free(popts);

    err = NULL;
    CHECK_OK(cfs_mount_options_new(&mopts, &err), err);
    err = NULL;
    CHECK_OK(cfs_mount_options_set(mopts, "stub_cache_dir", layer, &err), err);
    cfs_mount_options_free(mopts);
}

static void test_zero_length_inputs(void)
{
    char empty[4200], layer[4200], image[4200];
    static const uint8_t nothing[1] = {0};
    cfs_convert_result *res = NULL;
    cfs_config *cfg = NULL;
    cfs_error *err = NULL;
    int fd;

    /* A zero-length TOC buffer (non-NULL pointer, length 0) is malformed, not a crash. */
    CHECK_FAILED(cfs_toc_generate_dump(nothing, 0, NULL, -1, &err), err, CFS_STATUS_FORMAT);
    err = NULL;
    path_in(image, sizeof image, "zero-toc.img");
    CHECK_FAILED(cfs_toc_write_image(nothing, 0, NULL, image, NULL, &err), err, CFS_STATUS_FORMAT);
    CHECK(!exists(image));

    /* Empty strings as paths. */
    err = NULL;
    CHECK_FAILED(cfs_config_load_file("", &cfg, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(cfg == NULL);
    path_in(layer, sizeof layer, "never");
    err = NULL;
    CHECK_FAILED(cfs_layer_convert_path("", layer, NULL, &res, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(res == NULL && !exists(layer));

    /* A zero-byte layer blob: a format error, and no layer directory. */
    path_in(empty, sizeof empty, "zero-bytes");
    write_bytes(empty, "", 0);
    err = NULL;
    CHECK_FAILED(cfs_layer_convert_path(empty, layer, NULL, &res, &err), err, CFS_STATUS_FORMAT);
    CHECK(res == NULL && !exists(layer));

    /* A zero-byte dump makes no image. */
    path_in(image, sizeof image, "zero.img");
    err = NULL;
    CHECK_FAILED(cfs_image_write_from_dump(-1, empty, -1, image, NULL, NULL, &err), err, CFS_STATUS_FORMAT);
    CHECK(!exists(image));

    /* The fs-verity digest of nothing is defined (all zeros per the kernel's definition is not
     * required here: only that it succeeds). */
    fd = open(empty, O_RDONLY);
    if (fd >= 0) {
        uint8_t digest[32];
        err = NULL;
        CHECK_OK(cfs_fsverity_digest_fd(fd, digest, &err), err);
        close(fd);
    }
}

static cfs_status begin_ok(void *userdata, const cfs_byte_range *ranges, size_t n_ranges)
{
    (void)userdata;
    (void)ranges;
    (void)n_ranges;
    return CFS_OK;
}

/* A fetch that returns no bytes at all (a zero-length read from the start). */
static int64_t read_nothing(void *userdata, uint8_t *buf, size_t len)
{
    (void)userdata;
    (void)buf;
    (void)len;
    return 0;
}

/* Fetch callbacks that deliver nothing, and a blob of size 0: errors, never a hang or a layer. */
static void test_empty_fetches(void)
{
    char layer[4200];
    cfs_pull_result *res = NULL;
    cfs_error *err = NULL;
    cfs_status st;

    path_in(layer, sizeof layer, "pulled");
    st = cfs_layer_pull(1 << 20, begin_ok, read_nothing, NULL, layer, NULL, &res, &err);
    CHECK(st != CFS_OK && err != NULL && cfs_error_status(err) == st);
    CHECK(res == NULL && !exists(layer));
    cfs_error_free(err);
    err = NULL;
    st = cfs_layer_pull(0, begin_ok, read_nothing, NULL, layer, NULL, &res, &err);
    CHECK(st != CFS_OK && err != NULL && cfs_error_status(err) == st);
    CHECK(res == NULL && !exists(layer));
    cfs_error_free(err);
}

static void test_freed_handles(void)
{
    char conf[4200], tar[4200], layer[4200];
    cfs_config *cfg = NULL;
    cfs_convert_options *copts = NULL;
    cfs_convert_result *res = NULL;
    cfs_pull_options *popts = NULL;
    cfs_image_options *iopts = NULL;
    cfs_mount_options *mopts = NULL;
    cfs_error *err = NULL, *e2 = NULL;
    char *s = NULL;
    uint64_t u = 0;

    path_in(conf, sizeof conf, "freed.conf");
    write_bytes(conf, "[storage]\ndriver = \"overlay\"\n", 29);
    CHECK_OK(cfs_config_load_file(conf, &cfg, &err), err);
    cfs_config_free(cfg);
    err = NULL;
    CHECK_FAILED(cfs_config_get_string(cfg, "driver", &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(s == NULL);
    err = NULL;
    CHECK_FAILED(cfs_config_to_json(cfg, &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_config_free(cfg); /* double free: a no-op */

    err = NULL;
    CHECK_OK(cfs_convert_options_new(&copts, &err), err);
    cfs_convert_options_free(copts);
    err = NULL;
    CHECK_FAILED(cfs_convert_options_set_hardlinks(copts, true, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    path_in(tar, sizeof tar, "freed.tar");
    write_empty_tar(tar);
    path_in(layer, sizeof layer, "freed-layer");
    err = NULL;
    CHECK_FAILED(cfs_layer_convert_path(tar, layer, copts, &res, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    CHECK(res == NULL && !exists(layer));
    cfs_convert_options_free(copts);

    err = NULL;
    CHECK_OK(cfs_layer_convert_path(tar, layer, NULL, &res, &err), err);
    cfs_convert_result_free(res);
    err = NULL;
    CHECK_FAILED(cfs_convert_result_get_u64(res, "entries", &u, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_convert_result_diff_id(res, &s, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_convert_result_free(res);

    err = NULL;
    CHECK_OK(cfs_pull_options_new(&popts, &err), err);
    /* A handle of another type is refused too. */
    err = NULL;
    CHECK_FAILED(cfs_convert_options_set_hardlinks((cfs_convert_options *)(void *)popts, true, &err), err,
                 CFS_STATUS_INVALID_ARGUMENT);
    cfs_pull_options_free(popts);
    err = NULL;
    CHECK_FAILED(cfs_pull_options_set(popts, "hardlinks", "true", &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_pull_options_free(popts);

    iopts = cfs_image_options_new();
    CHECK(iopts != NULL);
    cfs_image_options_free(iopts);
    err = NULL;
    CHECK_FAILED(cfs_image_options_set_strict(iopts, true, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_image_options_free(iopts);

    err = NULL;
    CHECK_OK(cfs_mount_options_new(&mopts, &err), err);
    cfs_mount_options_free(mopts);
    err = NULL;
    CHECK_FAILED(cfs_mount_options_set(mopts, "verity", "off", &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_mount_cleanup(mopts, NULL, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    cfs_mount_options_free(mopts);

    /* A freed error object: accessors answer without reading it, a second free is a no-op. */
    CHECK(cfs_config_load_file("/nonexistent/cfs-misuse.conf", &cfg, &e2) != CFS_OK);
    CHECK(e2 != NULL && cfs_error_status(e2) == CFS_STATUS_NOT_FOUND);
    cfs_error_free(e2);
    CHECK(cfs_error_status(e2) == CFS_STATUS_INVALID_ARGUMENT);
    CHECK_STR(cfs_error_message(e2), "");
    CHECK(cfs_error_os_error(e2) == 0);
    cfs_error_free(e2);
    /* A pointer that never was a handle. */
    CHECK(cfs_error_status((const cfs_error *)(const void *)conf) == CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_config_get_string((const cfs_config *)(const void *)conf, "driver", &s, &err), err,
                 CFS_STATUS_INVALID_ARGUMENT);
}

/* Publishing a layer into a containers/storage layer store: a non-UTF-8 graph root works (paths
 * are bytes), the layer id must be UTF-8 and name a file, publishing twice succeeds, and the
 * result JSON lists what layers.json needs. */
#define PUB_ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define PUB_ROOT "graphroot-\xff"

static void test_publish_metadata(void)
{
    char tar[4400], root[4400], layer[4400], file[4400];
    cfs_convert_result *res = NULL;
    cfs_error *err = NULL;
    char *json = NULL;

    path_in(tar, sizeof tar, "publish.tar");
    write_empty_tar(tar);
    path_in(root, sizeof root, PUB_ROOT);
    mkdir(root, 0700);
    path_in(file, sizeof file, PUB_ROOT "/overlay");
    mkdir(file, 0700);
    path_in(layer, sizeof layer, PUB_ROOT "/overlay/" PUB_ID);
    CHECK_OK(cfs_layer_convert_path(tar, layer, NULL, &res, &err), err);
    cfs_convert_result_free(res);

    err = NULL;
    CHECK_FAILED(cfs_layer_publish_metadata(layer, root, BAD, true, &json, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_layer_publish_metadata(layer, root, "..", true, &json, &err), err, CFS_STATUS_INVALID_ARGUMENT);
    err = NULL;
    CHECK_FAILED(cfs_layer_publish_metadata(root, root, PUB_ID, true, &json, &err), err, CFS_STATUS_NOT_FOUND);
    CHECK(json == NULL);
    path_in(file, sizeof file, PUB_ROOT "/overlay-layers");
    CHECK(!exists(file));

    err = NULL;
    CHECK_OK(cfs_layer_publish_metadata(layer, root, PUB_ID, true, &json, &err), err);
    CHECK(json != NULL && strstr(json, "\"big-data-names\":[\"zstd-chunked-layer-data\",\"zstd-chunked-manifest\","
                                       "\"chunked-manifest-cache\"]") != NULL);
    cfs_string_free(json);
    path_in(file, sizeof file, PUB_ROOT "/overlay-layers/" PUB_ID "/=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==");
    CHECK(exists(file));
    path_in(file, sizeof file, PUB_ROOT "/overlay-layers/" PUB_ID ".tar-split.gz");
    CHECK(exists(file));
    /* Again, without wanting the result: the same content is already there. */
    err = NULL;
    CHECK_OK(cfs_layer_publish_metadata(layer, root, PUB_ID, false, NULL, &err), err);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cfs-misuse-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_invalid_utf8_text();
    test_non_utf8_paths_work();
    test_zero_length_inputs();
    test_empty_fetches();
    test_freed_handles();
    test_publish_metadata();
    {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return harness_summary("test_misuse");
}
