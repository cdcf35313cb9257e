package composefs

/*
#include <stdint.h>
#include <stdlib.h>
#include <composefs-storage.h>

// The Go trampoline (callbacks.go).
extern int cfsGoProgress(void *userdata, uint64_t bytes, uint64_t entries);

// The handle travels as an integer: converting it to a pointer on the Go side is what go vet
// rightly warns about.
static cfs_status cfs_go_set_progress(cfs_convert_options *o, uintptr_t handle, cfs_error **err) {
	return cfs_convert_options_set_progress(o, cfsGoProgress, (void *)handle, err);
}
*/
import "C"

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/cgo"
	"sync"
)

// VerityPolicy says whether fs-verity is enabled on objects and blobs.
type VerityPolicy string

// The fs-verity policies.
const (
	VerityOff         VerityPolicy = "off"          // never enable fs-verity
	VerityIfAvailable VerityPolicy = "if-available" // enable it where the filesystem supports it (default)
	VerityRequire     VerityPolicy = "require"      // fail where it cannot be enabled
)

// Progress is how far a conversion got: uncompressed bytes read and tar entries done.
type Progress struct {
	Bytes   uint64
	Entries uint64
}

// ConvertOptions are the options of ConvertLayer. A nil *ConvertOptions means the defaults: no
// source layers, objects reused by reflink or copy, fs-verity if available, OCI whiteouts
// converted to overlay whiteouts, the default limits.
type ConvertOptions struct {
	// SourceLayers are layer directories whose diff/ objects may be reused instead of written.
	SourceLayers []string
	// Hardlinks reuses source objects by hardlink instead of reflink (falling back to copy).
	Hardlinks bool
	// IndexDir, when set, is a directory where an index across the source layers' caches is
	// kept (created and rebuilt as needed), so that lookups cost the same with hundreds of
	// source layers as with a few.
	IndexDir string
	// Verity is the fs-verity policy; "" means VerityIfAvailable.
	Verity VerityPolicy
	// KeepWhiteoutFiles keeps OCI whiteouts as plain empty files, as containers/storage's flat
	// path does, instead of converting them into overlay whiteouts and opaque directories.
	KeepWhiteoutFiles bool
	// MaxEntries is the most tar entries accepted in one layer; 0 means the default (4 000 000).
	MaxEntries uint64
	// NoMetadata leaves out the blob digest, TOC, tar-split and layers cache files in
	// composefs-data/ (containers/storage keeps them in its layer store); the result still has
	// the TOC and tar-split (TOC, WriteTarSplit).
	NoMetadata bool
	// ExpectedDiffID ("sha256:<hex>"), when set, is the DiffID the layer must have: a mismatch
	// fails the conversion (ErrVerification) before the layer is published.
	ExpectedDiffID string
	// EstargzTOCDigest ("sha256:<hex>", the layer's containerd.io/snapshot/stargz/toc.digest
	// annotation), when set, says the input is an eStargz blob whose TOC JSON has that digest. A
	// file given by path is found to be eStargz by its footer anyway; a stream needs this.
	EstargzTOCDigest string
	// Progress, when set, is called after every tar entry (and every 16 MiB within a large file),
	// on the goroutine that called ConvertLayer.
	Progress func(Progress)
}

// progressState is what the progress trampoline reaches through its cgo.Handle.
type progressState struct {
	ctx      context.Context
	fn       func(Progress)
	panicked any // a panic of fn, re-raised once the C call returned
}

// report runs the Go callback and says whether to go on. A panic must not unwind through the
// library's frames: it cancels the conversion and is re-raised after it.
func (s *progressState) report(bytes, entries uint64) (goOn bool) {
	if s.panicked != nil {
		return false
	}
	if s.fn != nil {
		defer func() {
			if p := recover(); p != nil {
				s.panicked = p
				goOn = false
			}
		}()
		s.fn(Progress{Bytes: bytes, Entries: entries})
	}
	return s.ctx.Err() == nil
}

// toC builds the C options for one call, with the progress trampoline bound to handle.
func (o *ConvertOptions) toC(handle cgo.Handle) (*C.cfs_convert_options, error) {
	var c *C.cfs_convert_options
	var cerr *C.cfs_error
	if err := takeError(C.cfs_convert_options_new(&c, &cerr), cerr); err != nil {
		return nil, err
	}
	fail := func(err error) (*C.cfs_convert_options, error) {
		C.cfs_convert_options_free(c)
		return nil, err
	}
	cerr = nil
	if err := takeError(C.cfs_go_set_progress(c, C.uintptr_t(handle), &cerr), cerr); err != nil {
		return fail(err)
	}
	if o == nil {
		return c, nil
	}
	for _, dir := range o.SourceLayers {
		cdir, err := cStringArg(dir, "source layer")
		if err != nil {
			return fail(err)
		}
		cerr = nil
		status := C.cfs_convert_options_add_source_layer(c, cdir, &cerr)
		freeCString(cdir)
		if err := takeError(status, cerr); err != nil {
			return fail(err)
		}
	}
	if o.IndexDir != "" {
		cdir, err := cStringArg(o.IndexDir, "index dir")
		if err != nil {
			return fail(err)
		}
		cerr = nil
		status := C.cfs_convert_options_set_index_dir(c, cdir, &cerr)
		freeCString(cdir)
		if err := takeError(status, cerr); err != nil {
			return fail(err)
		}
	}
	cerr = nil
	if err := takeError(C.cfs_convert_options_set_hardlinks(c, C.bool(o.Hardlinks), &cerr), cerr); err != nil {
		return fail(err)
	}
	if o.Verity != "" {
		cpolicy, err := cStringArg(string(o.Verity), "verity policy")
		if err != nil {
			return fail(err)
		}
		cerr = nil
		status := C.cfs_convert_options_set_verity(c, cpolicy, &cerr)
		freeCString(cpolicy)
		if err := takeError(status, cerr); err != nil {
			return fail(err)
		}
	}
	cerr = nil
	if err := takeError(C.cfs_convert_options_set_keep_whiteout_files(c, C.bool(o.KeepWhiteoutFiles), &cerr), cerr); err != nil {
		return fail(err)
	}
	if o.MaxEntries != 0 {
		cerr = nil
		if err := takeError(C.cfs_convert_options_set_max_entries(c, C.uint64_t(o.MaxEntries), &cerr), cerr); err != nil {
			return fail(err)
		}
	}
	cerr = nil
	if err := takeError(C.cfs_convert_options_set_write_metadata(c, C.bool(!o.NoMetadata), &cerr), cerr); err != nil {
		return fail(err)
	}
	for _, d := range []struct {
		value string
		set   func(*C.cfs_convert_options, *C.char, **C.cfs_error) C.cfs_status
	}{
		{o.ExpectedDiffID, func(c *C.cfs_convert_options, v *C.char, e **C.cfs_error) C.cfs_status {
			return C.cfs_convert_options_set_expected_diff_id(c, v, e)
		}},
		{o.EstargzTOCDigest, func(c *C.cfs_convert_options, v *C.char, e **C.cfs_error) C.cfs_status {
			return C.cfs_convert_options_set_estargz_toc_digest(c, v, e)
		}},
	} {
		if d.value == "" {
			continue
		}
		cvalue := C.CString(d.value)
		cerr = nil
		status := d.set(c, cvalue, &cerr)
		freeCString(cvalue)
		if err := takeError(status, cerr); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// cancelledError is the error of a call that ctx cancelled: it matches ErrCancelled and ctx.Err()
// (context.Canceled or context.DeadlineExceeded) with errors.Is.
func cancelledError(ctx context.Context, what string) error {
	return fmt.Errorf("%w: %w", &Error{Status: StatusCancelled, Message: "composefs: " + what + " cancelled"}, context.Cause(ctx))
}

// ConvertLayer converts the layer blob read from input (tar, gzip or zstd) into the new directory
// layerDir, which must not exist: flat content-addressed objects in layerDir/diff and the composefs
// blob in layerDir/composefs-data. The directory appears only when complete: on error or
// cancellation nothing is left behind.
//
// An *os.File is read directly from its current offset; any other reader is fed through a pipe.
// Cancelling ctx stops the conversion at the next progress point (the library sees it through
// the progress callback's return value) and returns an error matching ErrCancelled and
// ctx.Err(). A blocked input Read is not interrupted: for a prompt cancel, give a reader that
// honours ctx too (an HTTP response body does).
func ConvertLayer(ctx context.Context, input io.Reader, layerDir string, opts *ConvertOptions) (*ConvertResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, cancelledError(ctx, "conversion")
	}
	cdir, err := cStringArg(layerDir, "layer dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	in, err := newInputFd(input)
	if err != nil {
		return nil, err
	}
	// On cancel, end the piped input so that a library blocked reading it sees its end.
	stopFeeding := context.AfterFunc(ctx, in.stop)
	res, err := convert(ctx, opts, func(copts *C.cfs_convert_options, out **C.cfs_convert_result, cerr **C.cfs_error) C.cfs_status {
		status := C.cfs_layer_convert_fd(C.int(in.fd()), cdir, copts, out, cerr)
		runtime.KeepAlive(in.file)
		return status
	})
	stopFeeding()
	inErr := in.finish()
	cut := in.wasCut()
	if res != nil && (inErr != nil || cut) {
		// The library converted a cut-short input (our reader failed, or we ended the pipe on
		// cancel): that layer is not the blob, so it must not stay.
		res.Close()
		res = nil
		os.RemoveAll(layerDir)
	}
	if inErr != nil {
		return nil, inErr
	}
	if res == nil && ctx.Err() != nil {
		return nil, cancelledError(ctx, "conversion")
	}
	return res, err
}

// ConvertLayerFile is ConvertLayer reading the blob from the file at inputPath.
func ConvertLayerFile(ctx context.Context, inputPath, layerDir string, opts *ConvertOptions) (*ConvertResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, cancelledError(ctx, "conversion")
	}
	cin, err := cStringArg(inputPath, "input path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cin)
	cdir, err := cStringArg(layerDir, "layer dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	res, err := convert(ctx, opts, func(copts *C.cfs_convert_options, out **C.cfs_convert_result, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_layer_convert_path(cin, cdir, copts, out, cerr)
	})
	if err != nil && ctx.Err() != nil {
		return nil, cancelledError(ctx, "conversion")
	}
	return res, err
}

// convert runs one cfs_layer_convert_* call with the options and the progress trampoline.
func convert(ctx context.Context, opts *ConvertOptions, call func(*C.cfs_convert_options, **C.cfs_convert_result, **C.cfs_error) C.cfs_status) (*ConvertResult, error) {
	st := &progressState{ctx: ctx}
	if opts != nil {
		st.fn = opts.Progress
	}
	handle := cgo.NewHandle(st)
	defer handle.Delete()
	copts, err := opts.toC(handle)
	if err != nil {
		return nil, err
	}
	defer C.cfs_convert_options_free(copts)
	var out *C.cfs_convert_result
	var cerr *C.cfs_error
	status := call(copts, &out, &cerr)
	if st.panicked != nil {
		C.cfs_convert_result_free(out)
		C.cfs_error_free(cerr)
		panic(st.panicked)
	}
	if err := takeError(status, cerr); err != nil {
		return nil, err
	}
	return newConvertResult(out), nil
}

// ConvertResult is the result of a conversion. It owns C memory: Close it when done (a finalizer
// frees it otherwise). Its methods may be called from several goroutines at once, also with Close.
type ConvertResult struct {
	mu sync.RWMutex
	c  *C.cfs_convert_result
}

// ConvertStats are the numbers of a conversion.
type ConvertStats struct {
	CompressedSize   uint64 // bytes of the blob as read
	UncompressedSize uint64 // bytes of the tar
	Entries          uint64 // tar entries
	Objects          uint64 // distinct regular-file contents
	ObjectsReused    uint64 // objects taken from source layers
	BytesWritten     uint64 // object bytes written
	BytesReused      uint64 // object bytes reused from source layers
	DedupHits        uint64 // files whose content was already an object of this layer
}

func newConvertResult(c *C.cfs_convert_result) *ConvertResult {
	r := &ConvertResult{c: c}
	runtime.SetFinalizer(r, (*ConvertResult).Close)
	return r
}

// Close frees the result. It is safe to call more than once.
func (r *ConvertResult) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		C.cfs_convert_result_free(r.c)
		r.c = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// with runs f with the live C handle under the read lock.
func (r *ConvertResult) with(f func(*C.cfs_convert_result) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.c == nil {
		return errClosed("ConvertResult")
	}
	err := f(r.c)
	runtime.KeepAlive(r)
	return err
}

func (r *ConvertResult) stringField(get func(*C.cfs_convert_result, **C.char, **C.cfs_error) C.cfs_status) (string, error) {
	var s string
	err := r.with(func(c *C.cfs_convert_result) error {
		var out *C.char
		var cerr *C.cfs_error
		if err := takeError(get(c, &out, &cerr), cerr); err != nil {
			return err
		}
		s = takeString(out)
		return nil
	})
	return s, err
}

// DiffID is the digest of the uncompressed tar, "sha256:<hex>".
func (r *ConvertResult) DiffID() (string, error) {
	return r.stringField(func(c *C.cfs_convert_result, out **C.char, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_convert_result_diff_id(c, out, cerr)
	})
}

// CompressedDigest is the digest of the blob as read, "sha256:<hex>".
func (r *ConvertResult) CompressedDigest() (string, error) {
	return r.stringField(func(c *C.cfs_convert_result, out **C.char, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_convert_result_compressed_digest(c, out, cerr)
	})
}

// JSON is the whole result as a JSON object (digests, sizes, counts, UIDs/GIDs, fs-verity
// digests of the objects and the blob).
func (r *ConvertResult) JSON() (string, error) {
	return r.stringField(func(c *C.cfs_convert_result, out **C.char, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_convert_result_to_json(c, out, cerr)
	})
}

// Uint64 is a numeric field by its C API name ("entries", "objects", ...; see ConvertStats). An
// unknown name is an ErrInvalidArgument.
func (r *ConvertResult) Uint64(name string) (uint64, error) {
	cname, err := cStringArg(name, "field name")
	if err != nil {
		return 0, err
	}
	defer freeCString(cname)
	var v uint64
	err = r.with(func(c *C.cfs_convert_result) error {
		var out C.uint64_t
		var cerr *C.cfs_error
		if err := takeError(C.cfs_convert_result_get_u64(c, cname, &out, &cerr), cerr); err != nil {
			return err
		}
		v = uint64(out)
		return nil
	})
	return v, err
}

// Stats returns all numeric fields.
func (r *ConvertResult) Stats() (ConvertStats, error) {
	var s ConvertStats
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"compressed_size", &s.CompressedSize}, {"uncompressed_size", &s.UncompressedSize},
		{"entries", &s.Entries}, {"objects", &s.Objects}, {"objects_reused", &s.ObjectsReused},
		{"bytes_written", &s.BytesWritten}, {"bytes_reused", &s.BytesReused}, {"dedup_hits", &s.DedupHits},
	} {
		v, err := r.Uint64(f.name)
		if err != nil {
			return ConvertStats{}, err
		}
		*f.dst = v
	}
	return s, nil
}

func (r *ConvertResult) bytesField(get func(*C.cfs_convert_result, **C.uint8_t, *C.size_t, **C.cfs_error) C.cfs_status) ([]byte, error) {
	var b []byte
	err := r.with(func(c *C.cfs_convert_result) error {
		var data *C.uint8_t
		var n C.size_t
		var cerr *C.cfs_error
		if err := takeError(get(c, &data, &n, &cerr), cerr); err != nil {
			return err
		}
		// Borrowed from the result: copy while the read lock keeps it alive.
		b = goBytes(data, n)
		return nil
	})
	return b, err
}

// TOC is the layer's TOC JSON, containers/storage's zstd-chunked-manifest format.
func (r *ConvertResult) TOC() ([]byte, error) {
	return r.bytesField(func(c *C.cfs_convert_result, data **C.uint8_t, n *C.size_t, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_convert_result_toc_json(c, data, n, cerr)
	})
}

// TarSplit is the layer's tar-split, gzip-compressed NDJSON (containers/storage's
// <id>.tar-split.gz).
func (r *ConvertResult) TarSplit() ([]byte, error) {
	return r.bytesField(func(c *C.cfs_convert_result, data **C.uint8_t, n *C.size_t, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_convert_result_tar_split(c, data, n, cerr)
	})
}

// WriteTarSplit writes the layer's tar-split NDJSON, uncompressed, to f from its current offset:
// what containers/storage keeps in an unnamed file until it stores the layer.
func (r *ConvertResult) WriteTarSplit(f *os.File) error {
	err := r.with(func(c *C.cfs_convert_result) error {
		var cerr *C.cfs_error
		return takeError(C.cfs_convert_result_write_tar_split(c, C.int32_t(f.Fd()), &cerr), cerr)
	})
	runtime.KeepAlive(f)
	return err
}
