//! The C API of partial pulls and of the TOC pieces, called as a C program would.

mod support;
use std::ffi::{c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use composefs_storage::ffi::error::{cfs_error, cfs_error_free, cfs_error_message, cfs_status};
use composefs_storage::ffi::pull::*;
use composefs_storage::ffi::toc::*;
use composefs_storage::ffi::util::cfs_string_free;

fn corpus() -> PathBuf {
    support::cstorage()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn message(err: *mut cfs_error) -> String {
    let m = unsafe { CStr::from_ptr(cfs_error_message(err)) }.to_string_lossy().into_owned();
    cfs_error_free(err);
    m
}

/// A fetcher over a file: the state a C caller would keep behind `userdata`.
struct Source {
    file: std::fs::File,
    ranges: Vec<cfs_byte_range>,
    next: usize,
    pos: u64,
    max_ranges: usize,
    begins: usize,
}

unsafe extern "C" fn begin(ud: *mut c_void, ranges: *const cfs_byte_range, n: usize) -> cfs_status {
    let s = unsafe { &mut *(ud as *mut Source) };
    s.begins += 1;
    if n > s.max_ranges {
        return cfs_status::CFS_STATUS_LIMIT_EXCEEDED;
    }
    s.ranges = unsafe { std::slice::from_raw_parts(ranges, n) }.to_vec();
    s.next = 0;
    s.pos = 0;
    cfs_status::CFS_OK
}

unsafe extern "C" fn read(ud: *mut c_void, buf: *mut u8, len: usize) -> i64 {
    let s = unsafe { &mut *(ud as *mut Source) };
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    while let Some(r) = s.ranges.get(s.next) {
        if s.pos < r.length {
            let want = len.min((r.length - s.pos) as usize);
            let n = s.file.read_at(&mut buf[..want], r.offset + s.pos).unwrap();
            s.pos += n as u64;
            return n as i64;
        }
        s.next += 1;
        s.pos = 0;
    }
    0
}

#[test]
fn pull_through_c_callbacks_with_options_and_result() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "etc-doc-gnu";
    let blob = corpus().join(case).join(format!("{case}.zstd-chunked"));
    let ann = std::fs::read_to_string(corpus().join(case).join(format!("{case}.annotations.json"))).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus().join(case).join(format!("{case}.compress.json"))).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(cfs_pull_options_new(&mut opts, &mut err), cfs_status::CFS_OK);
    for (k, v) in [
        ("annotations", ann.as_str()),
        ("verity", "off"),
        ("max_ranges", "16"),
        ("expected_diff_id", summary["diffID"].as_str().unwrap()),
    ] {
        assert_eq!(cfs_pull_options_set(opts, c(k).as_ptr(), c(v).as_ptr(), &mut err), cfs_status::CFS_OK, "{k}");
    }
    assert_eq!(
        cfs_pull_options_set(opts, c("nope").as_ptr(), c("1").as_ptr(), &mut err),
        cfs_status::CFS_STATUS_INVALID_ARGUMENT
    );
    assert!(message(err).contains("unknown pull option"));
    let mut err = std::ptr::null_mut();
    assert_eq!(
        cfs_pull_options_set(opts, c("max_ranges").as_ptr(), c("0").as_ptr(), &mut err),
        cfs_status::CFS_STATUS_INVALID_ARGUMENT
    );
    cfs_error_free(err);

    let file = std::fs::File::open(&blob).unwrap();
    let size = file.metadata().unwrap().len();
    let mut source = Source { file, ranges: vec![], next: 0, pos: 0, max_ranges: 4, begins: 0 };
    let dir = c(tmp.path().join("layer").to_str().unwrap());
    let mut result = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let st = cfs_layer_pull(
        size,
        Some(begin),
        Some(read),
        &mut source as *mut Source as *mut c_void,
        dir.as_ptr(),
        opts,
        &mut result,
        &mut err,
    );
    assert_eq!(st, cfs_status::CFS_OK, "{}", if err.is_null() { String::new() } else { message(err) });
    assert!(source.begins > 3, "refused requests were retried with fewer ranges");
    let mut json = std::ptr::null_mut();
    assert_eq!(cfs_pull_result_to_json(result, &mut json, std::ptr::null_mut()), cfs_status::CFS_OK);
    let j: serde_json::Value = serde_json::from_str(unsafe { CStr::from_ptr(json) }.to_str().unwrap()).unwrap();
    cfs_string_free(json);
    assert_eq!(j["diffID"], summary["diffID"]);
    let (mut data, mut len) = (std::ptr::null(), 0usize);
    assert_eq!(cfs_pull_result_toc_json(result, &mut data, &mut len, std::ptr::null_mut()), cfs_status::CFS_OK);
    let toc = unsafe { std::slice::from_raw_parts(data, len) };
    assert_eq!(toc, std::fs::read(corpus().join(case).join(format!("{case}.toc.raw.json"))).unwrap());
    cfs_pull_result_free(result);

    // A failing read callback fails the pull cleanly; output untouched.
    unsafe extern "C" fn bad_read(_: *mut c_void, _: *mut u8, _: usize) -> i64 {
        -1
    }
    let mut result = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let dir2 = c(tmp.path().join("layer2").to_str().unwrap());
    let h = support::hygiene::Hygiene::take(tmp.path());
    let st = cfs_layer_pull(
        size,
        Some(begin),
        Some(bad_read),
        &mut source as *mut Source as *mut c_void,
        dir2.as_ptr(),
        opts,
        &mut result,
        &mut err,
    );
    h.assert_clean("pull with a failing read callback");
    assert_ne!(st, cfs_status::CFS_OK);
    assert!(result.is_null());
    assert!(message(err).contains("read callback failed"));
    assert!(!tmp.path().join("layer2").exists());
    assert_eq!(
        cfs_layer_pull(
            size,
            None,
            Some(read),
            std::ptr::null_mut(),
            dir2.as_ptr(),
            opts,
            &mut result,
            std::ptr::null_mut()
        ),
        cfs_status::CFS_STATUS_NULL_ARGUMENT
    );
    cfs_pull_options_free(opts);
    cfs_pull_options_free(std::ptr::null_mut());
    cfs_pull_result_free(std::ptr::null_mut());

    // The file variant with default options locates the TOC through the footer.
    let mut result = std::ptr::null_mut();
    let p = c(blob.to_str().unwrap());
    let dir3 = c(tmp.path().join("layer3").to_str().unwrap());
    assert_eq!(
        cfs_layer_pull_path(p.as_ptr(), dir3.as_ptr(), std::ptr::null(), &mut result, std::ptr::null_mut()),
        cfs_status::CFS_OK
    );
    cfs_pull_result_free(result);
}

#[test]
fn toc_dump_image_and_read_through_the_c_api() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "handmade-pax";
    let dir = corpus().join(case);
    let toc = std::fs::read(dir.join(format!("{case}.toc.raw.json"))).unwrap();
    let verity = std::fs::read_to_string(dir.join(format!("{case}.verity.json"))).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let out = std::fs::File::create(tmp.path().join("dump")).unwrap();
    let cverity = c(&verity);
    assert_eq!(
        cfs_toc_generate_dump(toc.as_ptr(), toc.len(), cverity.as_ptr(), out.as_raw_fd(), std::ptr::null_mut()),
        cfs_status::CFS_OK
    );
    drop(out);
    let expected = std::fs::read(corpus().join("../cstorage-images").join(format!("{case}.with-verity.dump"))).unwrap();
    assert!(std::fs::read(tmp.path().join("dump")).unwrap() == expected);

    let image = c(tmp.path().join("composefs.blob").to_str().unwrap());
    let mut digest = [0u8; 32];
    assert_eq!(
        cfs_toc_write_image(
            toc.as_ptr(),
            toc.len(),
            cverity.as_ptr(),
            image.as_ptr(),
            digest.as_mut_ptr(),
            std::ptr::null_mut()
        ),
        cfs_status::CFS_OK
    );
    let tsv = std::fs::read_to_string(corpus().join("../cstorage-images/EXPECTED.tsv")).unwrap();
    let row: Vec<&str> =
        tsv.lines().find(|l| l.contains(&format!("{case}.with-verity.dump"))).unwrap().split('\t').collect();
    use sha2::Digest;
    let bytes = std::fs::read(tmp.path().join("composefs.blob")).unwrap();
    assert_eq!(format!("{:x}", sha2::Sha256::digest(&bytes)), row[3]);
    assert_eq!(digest.iter().map(|b| format!("{b:02x}")).collect::<String>(), row[5]);
    // Never overwritten.
    let mut err = std::ptr::null_mut();
    assert_eq!(
        cfs_toc_write_image(toc.as_ptr(), toc.len(), std::ptr::null(), image.as_ptr(), std::ptr::null_mut(), &mut err),
        cfs_status::CFS_STATUS_ALREADY_EXISTS
    );
    cfs_error_free(err);
    // A broken TOC is a format error that says so.
    let mut err = std::ptr::null_mut();
    let bad = b"{\"entries\":[{\"type\":\"reg\",\"name\":\"a\",\"size\":1,\"digest\":\"md5:00\"}]}";
    let other = c(tmp.path().join("other").to_str().unwrap());
    assert_eq!(
        cfs_toc_write_image(bad.as_ptr(), bad.len(), std::ptr::null(), other.as_ptr(), std::ptr::null_mut(), &mut err),
        cfs_status::CFS_STATUS_FORMAT
    );
    assert!(message(err).contains("sha256"));
    assert!(!tmp.path().join("other").exists());

    let blob = c(dir.join(format!("{case}.zstd-chunked")).to_str().unwrap());
    let ann = c(&std::fs::read_to_string(dir.join(format!("{case}.annotations.json"))).unwrap());
    let (mut json, mut digest) = (std::ptr::null_mut(), std::ptr::null_mut());
    assert_eq!(
        cfs_toc_read(blob.as_ptr(), ann.as_ptr(), &mut json, &mut digest, std::ptr::null_mut()),
        cfs_status::CFS_OK
    );
    assert_eq!(unsafe { CStr::from_ptr(json) }.to_bytes(), &toc[..]);
    assert!(unsafe { CStr::from_ptr(digest) }.to_str().unwrap().starts_with("sha256:"));
    cfs_string_free(json);
    cfs_string_free(digest);
}

/// containers/storage's commit of a pulled layer: the pull's blob is taken when it is the blob
/// `cfs_toc_write_layer_blob` would write, else that blob is written; the staged one is gone.
#[test]
fn a_pulled_layers_staged_blob_through_the_c_api() {
    let _serial = support::hygiene::lock();
    let case = "handmade-archive";
    let dir = corpus().join(case);
    let toc = std::fs::read(dir.join(format!("{case}.toc.raw.json"))).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blob = c(dir.join(format!("{case}.zstd-chunked")).to_str().unwrap());
    let path = |name: &str| tmp.path().join(name);
    let objects = std::fs::read_to_string(dir.join(format!("{case}.objects.txt"))).unwrap();
    let verity = format!("{{\"{}\": \"{}\"}}", objects.split(' ').next().unwrap(), "ab".repeat(32));
    for (k, verity) in [None, Some(c(&verity))].into_iter().enumerate() {
        let verity = verity.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        let layer = c(path(&format!("layer{k}")).to_str().unwrap());
        let mut result = std::ptr::null_mut();
        assert_eq!(
            cfs_layer_pull_path(blob.as_ptr(), layer.as_ptr(), std::ptr::null(), &mut result, std::ptr::null_mut()),
            cfs_status::CFS_OK
        );
        cfs_pull_result_free(result);
        let staged = path(&format!("staged{k}"));
        std::fs::rename(path(&format!("layer{k}/composefs-data/composefs.blob")), &staged).unwrap();
        let (staged_c, out, want) = (
            c(staged.to_str().unwrap()),
            c(path(&format!("out{k}")).to_str().unwrap()),
            c(path(&format!("want{k}")).to_str().unwrap()),
        );
        let (mut digest, mut want_digest) = ([0u8; 32], [1u8; 32]);
        assert_eq!(
            cfs_toc_write_layer_blob_staged(
                toc.as_ptr(),
                toc.len(),
                verity,
                std::ptr::null(),
                0,
                staged_c.as_ptr(),
                out.as_ptr(),
                digest.as_mut_ptr(),
                std::ptr::null_mut()
            ),
            cfs_status::CFS_OK
        );
        assert_eq!(
            cfs_toc_write_layer_blob(
                toc.as_ptr(),
                toc.len(),
                verity,
                std::ptr::null(),
                0,
                want.as_ptr(),
                want_digest.as_mut_ptr(),
                std::ptr::null_mut()
            ),
            cfs_status::CFS_OK
        );
        assert!(std::fs::read(path(&format!("out{k}"))).unwrap() == std::fs::read(path(&format!("want{k}"))).unwrap());
        assert_eq!(digest, want_digest);
        assert!(!staged.exists(), "{k}: the staged blob is gone");
    }
    // A NULL staged blob writes from the TOC; a broken TOC is then an error, with nothing written.
    let (bad, out) = (b"{", c(path("out-null").to_str().unwrap()));
    let mut err = std::ptr::null_mut();
    assert_eq!(
        cfs_toc_write_layer_blob_staged(
            bad.as_ptr(),
            bad.len(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            out.as_ptr(),
            std::ptr::null_mut(),
            &mut err
        ),
        cfs_status::CFS_STATUS_FORMAT
    );
    assert!(message(err).contains("TOC"), "{}", message(err));
    assert!(!path("out-null").exists());
}

#[test]
fn c_compress_writes_a_blob_our_reader_and_zstd_accept() {
    use composefs_storage::ffi::compress::cfs_chunked_compress;
    let case = "noparents-ustar";
    let tar_path = corpus().join(case).join(format!("{case}.tar"));
    let tmp = tempfile::tempdir().unwrap();
    let input = std::fs::File::open(&tar_path).unwrap();
    let out = std::fs::File::create(tmp.path().join("blob")).unwrap();
    let mut json: *mut std::ffi::c_char = std::ptr::null_mut();
    let mut err: *mut cfs_error = std::ptr::null_mut();
    let st = cfs_chunked_compress(input.as_raw_fd(), out.as_raw_fd(), 3, &mut json, &mut err);
    assert_eq!(st, cfs_status::CFS_OK, "{}", if err.is_null() { String::new() } else { message(err) });
    let result: serde_json::Value = serde_json::from_str(&unsafe { CStr::from_ptr(json) }.to_string_lossy()).unwrap();
    cfs_string_free(json);
    let blob = std::fs::read(tmp.path().join("blob")).unwrap();
    assert_eq!(result["blobSize"].as_u64().unwrap(), blob.len() as u64);
    assert_eq!(zstd::stream::decode_all(&blob[..]).unwrap(), std::fs::read(&tar_path).unwrap());
    let ann: std::collections::BTreeMap<String, String> =
        serde_json::from_value(result["annotations"].clone()).unwrap();
    let m = composefs_storage::chunked::read_manifest(&blob[..], Some(&ann), &Default::default()).unwrap();
    assert_eq!(m.location.toc_digest, result["tocDigest"].as_str().unwrap());

    // Bad input: an error naming the problem, and no result.
    let bad = std::fs::File::open(corpus().join(case).join(format!("{case}.toc.raw.json"))).unwrap();
    let out2 = std::fs::File::create(tmp.path().join("blob2")).unwrap();
    let mut json: *mut std::ffi::c_char = std::ptr::null_mut();
    let st = cfs_chunked_compress(bad.as_raw_fd(), out2.as_raw_fd(), 0, &mut json, &mut err);
    assert_ne!(st, cfs_status::CFS_OK);
    assert!(json.is_null());
    assert!(!message(err).is_empty());
}
