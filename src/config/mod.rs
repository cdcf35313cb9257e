//! containers-storage.conf: loading the composefs-related settings as containers/storage does
//! (SPEC §1).
