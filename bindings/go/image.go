package composefs

/*
#include <stdlib.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"
)

// Digest is a sha256 fs-verity digest (as FS_IOC_MEASURE_VERITY reports it for sha256 and
// 4096-byte blocks).
type Digest [32]byte

// String returns the digest as 64 lowercase hex digits, the form composefs dumps and
// containers/storage use.
func (d Digest) String() string {
	return hex.EncodeToString(d[:])
}

// ImageOptions are the options of writing a composefs image, those of mkcomposefs. A nil
// *ImageOptions means DefaultImageOptions().
type ImageOptions struct {
	MinVersion uint32 // lowest composefs format version (mkcomposefs --min-version), 0 or 1
	MaxVersion uint32 // highest (mkcomposefs --max-version), 0 or 1; raised to MinVersion if lower
	// RootWhiteoutStubs adds the 256 root whiteout stubs 00..ff as mkcomposefs does.
	RootWhiteoutStubs bool
	// Strict parses the dump as mkcomposefs does with CFS_PARSE_STRICT=1.
	Strict bool
}

// DefaultImageOptions returns mkcomposefs's defaults: versions 0..1, root whiteout stubs, lenient
// dump parsing. Images written with them are byte-identical to mkcomposefs 1.0.8's.
func DefaultImageOptions() *ImageOptions {
	return &ImageOptions{MinVersion: 0, MaxVersion: 1, RootWhiteoutStubs: true}
}

// cImageOptions builds the C options; the caller frees them with C.cfs_image_options_free.
func (o *ImageOptions) toC() (*C.cfs_image_options, error) {
	if o == nil {
		o = DefaultImageOptions()
	}
	c := C.cfs_image_options_new()
	var cerr *C.cfs_error
	// The maximum first: the C side checks min <= max after each step.
	steps := []func() C.cfs_status{
		func() C.cfs_status { return C.cfs_image_options_set_max_version(c, C.uint32_t(o.MaxVersion), &cerr) },
		func() C.cfs_status { return C.cfs_image_options_set_min_version(c, C.uint32_t(o.MinVersion), &cerr) },
		func() C.cfs_status {
			return C.cfs_image_options_set_root_whiteout_stubs(c, C.bool(o.RootWhiteoutStubs), &cerr)
		},
		func() C.cfs_status { return C.cfs_image_options_set_strict(c, C.bool(o.Strict), &cerr) },
	}
	for _, step := range steps {
		if err := takeError(step(), cerr); err != nil {
			C.cfs_image_options_free(c)
			return nil, err
		}
		cerr = nil
	}
	return c, nil
}

// writeImage runs cfs_image_write_from_dump with the given fd/path pairs (a "" path uses the fd).
func writeImage(dumpFd int, dumpPath string, imageFd int, imagePath string, opts *ImageOptions) (Digest, error) {
	var digest Digest
	copts, err := opts.toC()
	if err != nil {
		return digest, err
	}
	defer C.cfs_image_options_free(copts)
	var cdump, cimage *C.char
	if dumpPath != "" {
		if cdump, err = cStringArg(dumpPath, "dump path"); err != nil {
			return digest, err
		}
		defer freeCString(cdump)
	}
	if imagePath != "" {
		if cimage, err = cStringArg(imagePath, "image path"); err != nil {
			return digest, err
		}
		defer freeCString(cimage)
	}
	// The digest is written into C memory: Go memory handed to C must not hold Go pointers, which
	// a [32]byte does not, but a C buffer keeps the rule obvious.
	buf := (*C.uint8_t)(C.malloc(32))
	defer C.free(unsafe.Pointer(buf))
	var cerr *C.cfs_error
	status := C.cfs_image_write_from_dump(C.int32_t(dumpFd), cdump, C.int32_t(imageFd), cimage, copts, buf, &cerr)
	if err := takeError(status, cerr); err != nil {
		return digest, err
	}
	copy(digest[:], unsafe.Slice((*byte)(unsafe.Pointer(buf)), 32))
	return digest, nil
}

// WriteImageFromDumpFile writes the composefs image of the dump file dumpPath to imagePath
// (mkcomposefs --from-file DUMP IMAGE). The image replaces imagePath atomically; on error nothing
// is left behind. It returns the image's fs-verity digest.
func WriteImageFromDumpFile(imagePath, dumpPath string, opts *ImageOptions) (Digest, error) {
	return writeImage(-1, dumpPath, -1, imagePath, opts)
}

// WriteImageFile writes the composefs image of the dump read from dump to imagePath, replacing it
// atomically; on error (also an error of dump) nothing is left behind. It returns the image's
// fs-verity digest.
func WriteImageFile(imagePath string, dump io.Reader, opts *ImageOptions) (Digest, error) {
	var digest Digest
	dir, name := filepath.Split(imagePath)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return digest, ioError("create a temporary file for "+imagePath, err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if digest, err = WriteImage(tmp, dump, opts); err != nil {
		return digest, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return digest, ioError("chmod "+tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return digest, ioError("close "+tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), imagePath); err != nil {
		return digest, ioError("rename to "+imagePath, err)
	}
	tmp = nil
	return digest, nil
}

// WriteImage writes the composefs image of the dump read from dump to w, byte-identical to
// `mkcomposefs --from-file - -`, and returns the image's fs-verity digest. An *os.File is read or
// written directly from its current offset; other readers and writers go through a pipe.
func WriteImage(w io.Writer, dump io.Reader, opts *ImageOptions) (Digest, error) {
	var digest Digest
	in, err := newInputFd(dump)
	if err != nil {
		return digest, err
	}
	out, err := newOutputFd(w)
	if err != nil {
		in.stop()
		in.finish()
		return digest, err
	}
	digest, err = writeImage(in.fd(), "", out.fd(), "", opts)
	runtime.KeepAlive(in.file)
	runtime.KeepAlive(out.file)
	inErr, outErr := in.finish(), out.finish()
	return digest, firstError(inErr, outErr, err)
}

// ImageToDump prints the composefs image read from image as a composefs dump to w
// (composefs-info dump).
func ImageToDump(w io.Writer, image io.Reader) error {
	in, err := newInputFd(image)
	if err != nil {
		return err
	}
	out, err := newOutputFd(w)
	if err != nil {
		in.stop()
		in.finish()
		return err
	}
	var cerr *C.cfs_error
	status := C.cfs_image_to_dump(C.int32_t(in.fd()), nil, C.int32_t(out.fd()), &cerr)
	runtime.KeepAlive(in.file)
	runtime.KeepAlive(out.file)
	err = takeError(status, cerr)
	inErr, outErr := in.finish(), out.finish()
	return firstError(inErr, outErr, err)
}

// ImageFileToDump prints the composefs image file imagePath as a composefs dump to w.
func ImageFileToDump(w io.Writer, imagePath string) error {
	cpath, err := cStringArg(imagePath, "image path")
	if err != nil {
		return err
	}
	defer freeCString(cpath)
	out, err := newOutputFd(w)
	if err != nil {
		return err
	}
	var cerr *C.cfs_error
	status := C.cfs_image_to_dump(-1, cpath, C.int32_t(out.fd()), &cerr)
	runtime.KeepAlive(out.file)
	err = takeError(status, cerr)
	return firstError(out.finish(), err)
}

// FsverityDigest computes the fs-verity digest of everything read from r (from the current offset
// of an *os.File), as the kernel would measure a file with that content. It does not need a
// filesystem with fs-verity.
func FsverityDigest(r io.Reader) (Digest, error) {
	var digest Digest
	in, err := newInputFd(r)
	if err != nil {
		return digest, err
	}
	buf := (*C.uint8_t)(C.malloc(32))
	defer C.free(unsafe.Pointer(buf))
	var cerr *C.cfs_error
	status := C.cfs_fsverity_digest_fd(C.int32_t(in.fd()), buf, &cerr)
	runtime.KeepAlive(in.file)
	err = takeError(status, cerr)
	if err = firstError(in.finish(), err); err != nil {
		return digest, err
	}
	copy(digest[:], unsafe.Slice((*byte)(unsafe.Pointer(buf)), 32))
	return digest, nil
}

// FsverityDigestFile computes the fs-verity digest of the file at path.
func FsverityDigestFile(path string) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Digest{}, ioError("open "+path, err)
	}
	defer f.Close()
	return FsverityDigest(f)
}
