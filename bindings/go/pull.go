package composefs

/*
#include <stdint.h>
#include <stdlib.h>
#include <composefs-storage.h>

// The Go trampolines (callbacks.go).
extern int cfsGoProgress(void *userdata, uint64_t bytes, uint64_t entries);
extern cfs_status cfsGoFetchBegin(void *userdata, cfs_byte_range *ranges, size_t n);
extern int64_t cfsGoFetchRead(void *userdata, uint8_t *buf, size_t n);

static cfs_status cfs_go_fetch_begin(void *userdata, const cfs_byte_range *ranges, size_t n) {
	return cfsGoFetchBegin(userdata, (cfs_byte_range *)ranges, n);
}

static cfs_status cfs_go_pull_set_progress(cfs_pull_options *o, uintptr_t handle, cfs_error **err) {
	return cfs_pull_options_set_progress(o, cfsGoProgress, (void *)handle, err);
}

static cfs_status cfs_go_layer_pull(uint64_t blob_size, uintptr_t handle, const char *layer_dir,
                                    const cfs_pull_options *options, cfs_pull_result **out, cfs_error **err) {
	return cfs_layer_pull(blob_size, cfs_go_fetch_begin, cfsGoFetchRead, (void *)handle, layer_dir, options, out, err);
}
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/cgo"
	"strconv"
	"sync"
)

// Chunk is a byte range of a blob, the shape of containers/image's ImageSourceChunk.
type Chunk struct {
	Offset uint64
	Length uint64
}

// Fetcher returns the bytes of chunks (sorted, disjoint), concatenated in order, as
// containers/image's blob-chunk accessor (GetBlobAt) serves them; ConcatStreams adapts its
// channels. If the reader is an io.Closer it is closed when read. An error matching
// ErrTooManyRanges (such as a server's "400 Bad Request" for too many ranges, wrapped with
// fmt.Errorf("...: %w", ErrTooManyRanges)) makes the puller ask again with fewer ranges; any
// other error fails the pull and is returned by PullLayer.
type Fetcher func(ctx context.Context, chunks []Chunk) (io.Reader, error)

// ErrTooManyRanges is what a Fetcher returns (wrapped) when the source refuses that many ranges at
// once. It is ErrLimitExceeded.
var ErrTooManyRanges = ErrLimitExceeded

// ConcatStreams turns what containers/image's GetBlobAt returns (a channel of readers, one per
// chunk, and a channel of errors) into one reader of the concatenated bytes. Each reader is
// closed once read; the first error on errs fails the read.
func ConcatStreams(streams chan io.ReadCloser, errs chan error) io.ReadCloser {
	return &concatReader{streams: streams, errs: errs}
}

type concatReader struct {
	streams chan io.ReadCloser
	errs    chan error
	cur     io.ReadCloser
	err     error
}

func (c *concatReader) Read(p []byte) (int, error) {
	for c.err == nil {
		if c.cur == nil {
			select {
			case r, ok := <-c.streams:
				if !ok {
					c.streams = nil
					// Streams done: any error still pending on errs wins over the end.
					if c.errs != nil {
						if err, ok := <-c.errs; ok && err != nil {
							c.err = err
							continue
						}
					}
					c.err = io.EOF
					continue
				}
				c.cur = r
			case err, ok := <-c.errs:
				if !ok {
					c.errs = nil
					if c.streams == nil {
						c.err = io.EOF
					}
					continue
				}
				if err != nil {
					c.err = err
				}
				continue
			}
		}
		n, err := c.cur.Read(p)
		if err == io.EOF {
			c.cur.Close()
			c.cur = nil
			if n == 0 {
				continue
			}
			return n, nil
		}
		if err != nil {
			c.err = err
		}
		return n, err
	}
	return 0, c.err
}

// Close closes the current reader and drains the rest, closing them.
func (c *concatReader) Close() error {
	if c.cur != nil {
		c.cur.Close()
		c.cur = nil
	}
	for c.streams != nil {
		r, ok := <-c.streams
		if !ok {
			break
		}
		r.Close()
	}
	if c.errs != nil {
		for range c.errs {
		}
	}
	c.streams, c.errs = nil, nil
	return nil
}

// PullOptions are the options of PullLayer. A nil *PullOptions means the defaults: the TOC
// located through the blob's footer (not authenticated), fs-verity if available, DiffID verified,
// metadata (TOC, tar-split, blob digest) kept in composefs-data/.
type PullOptions struct {
	// Annotations are the layer's OCI annotations: the TOC digest there authenticates the TOC.
	Annotations map[string]string
	// SourceLayers are layer directories whose objects may be reused instead of fetched.
	SourceLayers []string
	// IndexDir: as ConvertOptions.IndexDir.
	IndexDir string
	// Hardlinks reuses objects by hardlink instead of reflink (falling back to copy).
	Hardlinks bool
	// Verity is the fs-verity policy; "" means VerityIfAvailable.
	Verity VerityPolicy
	// KeepWhiteoutFiles keeps OCI whiteouts as plain empty files.
	KeepWhiteoutFiles bool
	// InsecureSkipDiffID accepts layers without a tar-split and skips the DiffID check
	// (containers/storage's insecure_allow_unpredictable_image_contents).
	InsecureSkipDiffID bool
	// ExpectedDiffID ("sha256:<hex>"), when set, is the DiffID the image config promises: a
	// mismatch fails the pull.
	ExpectedDiffID string
	// MaxRanges is the most ranges per fetch; 0 means the default (1024).
	MaxRanges int
	// NoMetadata leaves out the TOC, tar-split and blob digest files in composefs-data/.
	NoMetadata bool
	// Manifest, when set, is the blob's manifest read with ReadChunkedManifest: the pull takes
	// the TOC and tar-split from it instead of fetching and checking them again, and Annotations
	// is not looked at.
	Manifest *ChunkedManifest
	// Progress, when set, is called with the file bytes fetched and TOC entries done, on the
	// goroutine that called PullLayer.
	Progress func(Progress)
}

func (o *PullOptions) toC(handle cgo.Handle) (*C.cfs_pull_options, error) {
	var c *C.cfs_pull_options
	var cerr *C.cfs_error
	if err := takeError(C.cfs_pull_options_new(&c, &cerr), cerr); err != nil {
		return nil, err
	}
	fail := func(err error) (*C.cfs_pull_options, error) {
		C.cfs_pull_options_free(c)
		return nil, err
	}
	cerr = nil
	if err := takeError(C.cfs_go_pull_set_progress(c, C.uintptr_t(handle), &cerr), cerr); err != nil {
		return fail(err)
	}
	if o == nil {
		return c, nil
	}
	var kvs [][2]string
	if o.Annotations != nil {
		js, err := json.Marshal(o.Annotations)
		if err != nil {
			return fail(&Error{Status: StatusInvalidArgument, Message: "composefs: encoding the annotations: " + err.Error()})
		}
		kvs = append(kvs, [2]string{"annotations", string(js)})
	}
	for _, dir := range o.SourceLayers {
		kvs = append(kvs, [2]string{"source_layer", dir})
	}
	if o.IndexDir != "" {
		kvs = append(kvs, [2]string{"index_dir", o.IndexDir})
	}
	kvs = append(kvs,
		[2]string{"hardlinks", strconv.FormatBool(o.Hardlinks)},
		[2]string{"keep_whiteout_files", strconv.FormatBool(o.KeepWhiteoutFiles)},
		[2]string{"insecure_skip_diff_id", strconv.FormatBool(o.InsecureSkipDiffID)},
		[2]string{"write_metadata", strconv.FormatBool(!o.NoMetadata)})
	if o.Verity != "" {
		kvs = append(kvs, [2]string{"verity", string(o.Verity)})
	}
	if o.ExpectedDiffID != "" {
		kvs = append(kvs, [2]string{"expected_diff_id", o.ExpectedDiffID})
	}
	if o.MaxRanges != 0 {
		kvs = append(kvs, [2]string{"max_ranges", strconv.Itoa(o.MaxRanges)})
	}
	if o.Manifest != nil {
		// The options take their own reference: the manifest may be closed after the pull.
		err := o.Manifest.with(func(m *C.cfs_chunked_manifest) error {
			var cerr *C.cfs_error
			return takeError(C.cfs_pull_options_set_manifest(c, m, &cerr), cerr)
		})
		if err != nil {
			return fail(err)
		}
	}
	for _, kv := range kvs {
		ckey, err := cStringArg(kv[0], "pull option name")
		if err != nil {
			return fail(err)
		}
		cval, err := cStringArg(kv[1], "pull option "+kv[0])
		if err != nil {
			freeCString(ckey)
			return fail(err)
		}
		cerr = nil
		status := C.cfs_pull_options_set(c, ckey, cval, &cerr)
		freeCString(ckey)
		freeCString(cval)
		if err := takeError(status, cerr); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// pullState is what the fetch trampolines reach through their cgo.Handle.
type pullState struct {
	progressState
	fetch    Fetcher
	cur      io.Reader
	pending  error // an error the current reader returned with data, reported on the next read
	fetchErr error // the first error of the fetcher or a reader, returned by PullLayer
	refused  error // the last ErrTooManyRanges of the fetcher, returned if the library gives up
}

// wrap adds to the library's error what the fetcher said: its failure, or its last refusal of
// too many ranges when the library gave up asking with fewer (a LIMIT_EXCEEDED error).
func (st *pullState) wrap(err error) error {
	switch {
	case st.fetchErr != nil:
		return fmt.Errorf("%w: %w", err, st.fetchErr)
	case st.refused != nil && errors.Is(err, ErrLimitExceeded):
		return fmt.Errorf("%w: %w", err, st.refused)
	}
	return err
}

// begin starts a fetch and returns a cfs_status.
func (st *pullState) begin(chunks []Chunk) (status C.cfs_status) {
	if st.panicked != nil || st.ctx.Err() != nil {
		return C.CFS_STATUS_CANCELLED
	}
	st.closeCurrent()
	defer func() {
		if p := recover(); p != nil {
			st.panicked = p
			status = C.CFS_STATUS_CANCELLED
		}
	}()
	r, err := st.fetch(st.ctx, chunks)
	if err != nil {
		if errors.Is(err, ErrTooManyRanges) {
			st.refused = err
			return C.CFS_STATUS_LIMIT_EXCEEDED
		}
		st.fail(fmt.Errorf("fetching %d ranges: %w", len(chunks), err))
		return C.CFS_STATUS_IO
	}
	if r == nil {
		st.fail(errors.New("the fetcher returned no reader and no error"))
		return C.CFS_STATUS_IO
	}
	st.cur = r
	return C.CFS_OK
}

// read fills buf from the current fetch: bytes read, 0 at its end, -1 on error.
func (st *pullState) read(buf []byte) (n int64) {
	if st.panicked != nil || st.ctx.Err() != nil || st.cur == nil {
		return -1
	}
	if st.pending != nil {
		st.fail(st.pending)
		return -1
	}
	defer func() {
		if p := recover(); p != nil {
			st.panicked = p
			n = -1
		}
	}()
	// 0 bytes means the end to the library, so a Read of (0, nil) is retried.
	for tries := 0; tries < 100; tries++ {
		k, err := st.cur.Read(buf)
		if err != nil && err != io.EOF {
			if k > 0 {
				st.pending = err
				return int64(k)
			}
			st.fail(err)
			return -1
		}
		if k > 0 || err == io.EOF {
			return int64(k)
		}
	}
	st.fail(io.ErrNoProgress)
	return -1
}

func (st *pullState) fail(err error) {
	if st.fetchErr == nil {
		st.fetchErr = err
	}
}

func (st *pullState) closeCurrent() {
	if c, ok := st.cur.(io.Closer); ok {
		c.Close()
	}
	st.cur, st.pending = nil, nil
}

// PullLayer pulls a zstd:chunked layer of blobSize bytes into the new directory layerDir, fetching
// through fetch only the ranges of the files that neither this layer nor a source layer already
// has. Each file is verified against its digest, and the DiffID by reassembling the tar from the
// tar-split, as containers/storage does. The layer is the same as ConvertLayer of the whole blob
// gives. On error or cancellation nothing is left behind.
//
// Cancelling ctx stops the pull at the next fetch, read or progress point (and ctx is passed
// to fetch); the error then matches ErrCancelled and ctx.Err(). An error of the fetcher or its
// reader is returned wrapped (errors.Is finds it) and matches ErrIO.
func PullLayer(ctx context.Context, fetch Fetcher, blobSize uint64, layerDir string, opts *PullOptions) (*PullResult, error) {
	if fetch == nil {
		return nil, &Error{Status: StatusNullArgument, Message: "composefs: PullLayer needs a fetcher"}
	}
	if ctx.Err() != nil {
		return nil, cancelledError(ctx, "pull")
	}
	cdir, err := cStringArg(layerDir, "layer dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	st := &pullState{progressState: progressState{ctx: ctx}, fetch: fetch}
	if opts != nil {
		st.fn = opts.Progress
	}
	handle := cgo.NewHandle(st)
	defer handle.Delete()
	copts, err := opts.toC(handle)
	if err != nil {
		return nil, err
	}
	defer C.cfs_pull_options_free(copts)
	var out *C.cfs_pull_result
	var cerr *C.cfs_error
	status := C.cfs_go_layer_pull(C.uint64_t(blobSize), C.uintptr_t(handle), cdir, copts, &out, &cerr)
	st.closeCurrent()
	if st.panicked != nil {
		C.cfs_pull_result_free(out)
		C.cfs_error_free(cerr)
		panic(st.panicked)
	}
	err = takeError(status, cerr)
	switch {
	case err == nil:
		return newPullResult(out), nil
	case ctx.Err() != nil:
		return nil, cancelledError(ctx, "pull")
	}
	return nil, st.wrap(err)
}

// PullLayerFile is PullLayer for a blob that is a file on disk.
func PullLayerFile(ctx context.Context, blobPath, layerDir string, opts *PullOptions) (*PullResult, error) {
	if ctx.Err() != nil {
		return nil, cancelledError(ctx, "pull")
	}
	cpath, err := cStringArg(blobPath, "blob path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	cdir, err := cStringArg(layerDir, "layer dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
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
	defer C.cfs_pull_options_free(copts)
	var out *C.cfs_pull_result
	var cerr *C.cfs_error
	status := C.cfs_layer_pull_path(cpath, cdir, copts, &out, &cerr)
	if st.panicked != nil {
		C.cfs_pull_result_free(out)
		C.cfs_error_free(cerr)
		panic(st.panicked)
	}
	if err := takeError(status, cerr); err != nil {
		if ctx.Err() != nil {
			return nil, cancelledError(ctx, "pull")
		}
		return nil, err
	}
	return newPullResult(out), nil
}

// PullResult is the result of a pull. It owns C memory: Close it when done (a finalizer frees it
// otherwise). Its methods may be called from several goroutines at once, also with Close.
type PullResult struct {
	mu sync.RWMutex
	c  *C.cfs_pull_result
}

// PullInfo is what a pull did (PullResult.Info).
type PullInfo struct {
	LayerDir         string   `json:"layerDir"`
	TOCDigest        string   `json:"tocDigest"`        // sha256 of the compressed TOC
	TOCAuthenticated bool     `json:"tocAuthenticated"` // the TOC digest came from the annotations
	DiffID           string   `json:"diffID"`           // "" when skipped
	BlobSize         uint64   `json:"blobSize"`
	BlobBytesFetched uint64   `json:"blobBytesFetched"` // TOC, tar-split and file data, gaps included
	Requests         uint64   `json:"requests"`         // fetches made
	Ranges           uint64   `json:"ranges"`           // ranges asked for in all
	Entries          uint64   `json:"entries"`
	Objects          uint64   `json:"objects"`
	ObjectsReused    uint64   `json:"objectsReused"`
	BytesWritten     uint64   `json:"bytesWritten"`
	BytesReused      uint64   `json:"bytesReused"`
	ChunkBytesReused uint64   `json:"chunkBytesReused"` // bytes of missing files copied from local chunks instead of fetched
	DedupHits        uint64   `json:"dedupHits"`
	UIDs             []uint32 `json:"uids"`
	GIDs             []uint32 `json:"gids"`
	BlobFsVerity     string   `json:"blobFsVerity"` // hex fs-verity digest of the composefs blob
}

func newPullResult(c *C.cfs_pull_result) *PullResult {
	r := &PullResult{c: c}
	runtime.SetFinalizer(r, (*PullResult).Close)
	return r
}

// Close frees the result. It is safe to call more than once.
func (r *PullResult) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		C.cfs_pull_result_free(r.c)
		r.c = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

func (r *PullResult) with(f func(*C.cfs_pull_result) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.c == nil {
		return errClosed("PullResult")
	}
	err := f(r.c)
	runtime.KeepAlive(r)
	return err
}

// JSON is the result as a JSON object (the fields of PullInfo).
func (r *PullResult) JSON() (string, error) {
	var s string
	err := r.with(func(c *C.cfs_pull_result) error {
		var out *C.char
		var cerr *C.cfs_error
		if err := takeError(C.cfs_pull_result_to_json(c, &out, &cerr), cerr); err != nil {
			return err
		}
		s = takeString(out)
		return nil
	})
	return s, err
}

// Info decodes JSON.
func (r *PullResult) Info() (PullInfo, error) {
	var info PullInfo
	js, err := r.JSON()
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal([]byte(js), &info); err != nil {
		return info, &Error{Status: StatusInternal, Message: "composefs: decoding the pull result: " + err.Error()}
	}
	return info, nil
}

// TOC is the decompressed TOC JSON of the pulled layer (containers/storage's
// zstd-chunked-manifest).
func (r *PullResult) TOC() ([]byte, error) {
	var b []byte
	err := r.with(func(c *C.cfs_pull_result) error {
		var data *C.uint8_t
		var n C.size_t
		var cerr *C.cfs_error
		if err := takeError(C.cfs_pull_result_toc_json(c, &data, &n, &cerr), cerr); err != nil {
			return err
		}
		b = goBytes(data, n)
		return nil
	})
	return b, err
}
