/* The example of composefs-storage(3): convert one layer blob into a new composefs layer directory
 * and print the result. Build: cc convert.c $(pkg-config --cflags --libs composefs-storage)
 * tests/man.rs checks that the man page's EXAMPLE is this file (below this comment). */
#include <stdio.h>
#include <composefs-storage.h>

int main(int argc, char **argv) {
    cfs_error *err = NULL;
    cfs_convert_result *res = NULL;
    char *json = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: %s LAYER.tar[.gz|.zst] NEW-LAYER-DIR\n", argv[0]);
        return 2;
    }
    if (cfs_layer_convert_path(argv[1], argv[2], NULL, &res, &err) != CFS_OK) {
        fprintf(stderr, "%s: %s\n", cfs_status_name(cfs_error_status(err)),
                cfs_error_message(err));
        cfs_error_free(err);
        return 1;
    }
    if (cfs_convert_result_to_json(res, &json, NULL) == CFS_OK)
        puts(json);
    cfs_string_free(json);
    cfs_convert_result_free(res);
    return 0;
}
