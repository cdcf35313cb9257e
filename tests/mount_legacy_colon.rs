//! As `mount_legacy.rs`, for a kernel without data-only lowers (plain `:` before the object
//! dirs, whose `xx/` names the image's root stubs hide). Its own process: the restriction is
//! process-wide.

mod mount_support;

#[test]
fn legacy_option_string_without_data_only_lowers() {
    mount_support::legacy_run(false);
}
