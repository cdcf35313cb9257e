//! The fallbacks for older kernels, forced on this one: EROFS through a loop device, EROFS
//! attached under a temp dir (no detached layers), the classic option string with `::`.
//! One test per process: the restriction is process-wide.

mod mount_support;

#[test]
fn legacy_option_string_with_data_only_lowers() {
    mount_support::legacy_run(true);
}
