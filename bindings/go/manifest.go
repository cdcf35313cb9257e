package composefs

/*
#include <stdint.h>
#include <stdlib.h>
#include <composefs-storage.h>

extern cfs_status cfsGoFetchBegin(void *userdata, cfs_byte_range *ranges, size_t n);
extern int64_t cfsGoFetchRead(void *userdata, uint8_t *buf, size_t n);

static cfs_status cfs_go_manifest_fetch_begin(void *userdata, const cfs_byte_range *ranges, size_t n) {
	return cfsGoFetchBegin(userdata, (cfs_byte_range *)ranges, n);
}

static cfs_status cfs_go_chunked_manifest_read(uint64_t blob_size, uintptr_t handle, const char *annotations,
                                               const char *tmp_dir, cfs_chunked_manifest **out, cfs_error **err) {
	return cfs_chunked_manifest_read(blob_size, cfs_go_manifest_fetch_begin, cfsGoFetchRead, (void *)handle,
	                                 annotations, tmp_dir, out, err);
}
*/
import "C"

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"runtime/cgo"
	"sync"
)

// ChunkedManifest is the TOC and tar-split of a zstd:chunked blob, fetched, authenticated and
// checked against each other (ReadChunkedManifest): what containers/storage's NewDiffer reads
// before it pulls. Give it to PullLayer in PullOptions.Manifest so the pull does not fetch and
// check them again. It owns C memory: Close it when done (a finalizer frees it otherwise); a pull
// it was given to keeps its own reference.
type ChunkedManifest struct {
	mu sync.RWMutex
	c  *C.cfs_chunked_manifest
}

// ChunkedManifestInfo is what ChunkedManifest.Info reports.
type ChunkedManifestInfo struct {
	TOCDigest        string `json:"tocDigest"`        // sha256 of the compressed TOC
	TOCAuthenticated bool   `json:"tocAuthenticated"` // the TOC digest came from the annotations
	TOCOffset        uint64 `json:"tocOffset"`        // of the TOC frame in the blob
	TarSize          *int64 `json:"tarSize"`          // of the layer's tar (nil without a tar-split)
}

// ReadChunkedManifest fetches through fetch the TOC and tar-split of the zstd:chunked blob of
// blobSize bytes, authenticates them (the TOC by the digest in annotations, the tar-split by the
// digest in the TOC), and checks that both describe the same entries with the same metadata, as
// containers/storage's readZstdChunkedManifest and ensureTOCMatchesTarSplit do. Without
// annotations the TOC is found through the blob's footer and is not authenticated. The decoded
// tar-split is kept in an unnamed file in tmpDir ("" for the system's temporary directory).
//
// Errors match ErrFormat (a malformed or inconsistent manifest), ErrVerification (a digest
// mismatch), ErrLimitExceeded (a TOC or tar-split too big to process, or ranges the fetcher
// refused with ErrTooManyRanges, wrapped), ErrUnsupported (not a zstd:chunked layer), or what
// fetch returned (wrapped, and ErrIO).
func ReadChunkedManifest(ctx context.Context, fetch Fetcher, blobSize uint64, annotations map[string]string, tmpDir string) (*ChunkedManifest, error) {
	if fetch == nil {
		return nil, &Error{Status: StatusNullArgument, Message: "composefs: ReadChunkedManifest needs a fetcher"}
	}
	if ctx.Err() != nil {
		return nil, cancelledError(ctx, "reading the manifest")
	}
	var cann, ctmp *C.char
	if annotations != nil {
		js, err := json.Marshal(annotations)
		if err != nil {
			return nil, &Error{Status: StatusInvalidArgument, Message: "composefs: encoding the annotations: " + err.Error()}
		}
		if cann, err = cStringArg(string(js), "annotations"); err != nil {
			return nil, err
		}
		defer freeCString(cann)
	}
	if tmpDir != "" {
		var err error
		if ctmp, err = cStringArg(tmpDir, "temporary directory"); err != nil {
			return nil, err
		}
		defer freeCString(ctmp)
	}
	st := &pullState{progressState: progressState{ctx: ctx}, fetch: fetch}
	handle := cgo.NewHandle(st)
	defer handle.Delete()
	var out *C.cfs_chunked_manifest
	var cerr *C.cfs_error
	status := C.cfs_go_chunked_manifest_read(C.uint64_t(blobSize), C.uintptr_t(handle), cann, ctmp, &out, &cerr)
	st.closeCurrent()
	if st.panicked != nil {
		C.cfs_chunked_manifest_free(out)
		C.cfs_error_free(cerr)
		panic(st.panicked)
	}
	err := takeError(status, cerr)
	switch {
	case err == nil:
		m := &ChunkedManifest{c: out}
		runtime.SetFinalizer(m, (*ChunkedManifest).Close)
		return m, nil
	case ctx.Err() != nil:
		return nil, cancelledError(ctx, "reading the manifest")
	}
	return nil, st.wrap(err)
}

// Close frees the manifest. It is safe to call more than once.
func (m *ChunkedManifest) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c != nil {
		C.cfs_chunked_manifest_free(m.c)
		m.c = nil
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

func (m *ChunkedManifest) with(f func(*C.cfs_chunked_manifest) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.c == nil {
		return errClosed("ChunkedManifest")
	}
	err := f(m.c)
	runtime.KeepAlive(m)
	return err
}

// TOC is the decompressed TOC JSON (containers/storage's zstd-chunked-manifest).
func (m *ChunkedManifest) TOC() ([]byte, error) {
	var b []byte
	err := m.with(func(c *C.cfs_chunked_manifest) error {
		var data *C.uint8_t
		var n C.size_t
		var cerr *C.cfs_error
		if err := takeError(C.cfs_chunked_manifest_toc_json(c, &data, &n, &cerr), cerr); err != nil {
			return err
		}
		b = goBytes(data, n)
		return nil
	})
	return b, err
}

// Info reports the TOC's digest and place and the tar's size.
func (m *ChunkedManifest) Info() (ChunkedManifestInfo, error) {
	var info ChunkedManifestInfo
	err := m.with(func(c *C.cfs_chunked_manifest) error {
		var out *C.char
		var cerr *C.cfs_error
		if err := takeError(C.cfs_chunked_manifest_to_json(c, &out, &cerr), cerr); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(takeString(out)), &info); err != nil {
			return &Error{Status: StatusInternal, Message: "composefs: decoding the manifest info: " + err.Error()}
		}
		return nil
	})
	return info, err
}

// TarSplit opens the decoded tar-split (NDJSON) as a new *os.File of the caller's, at offset 0:
// containers/storage keeps it with the layer. The pull reads its own copy by position, so the
// file may be read at any time. A layer without an authenticated tar-split gives an error
// matching ErrNotFound.
func (m *ChunkedManifest) TarSplit() (*os.File, error) {
	var f *os.File
	err := m.with(func(c *C.cfs_chunked_manifest) error {
		var fd C.int32_t
		var cerr *C.cfs_error
		if err := takeError(C.cfs_chunked_manifest_tar_split_fd(c, &fd, &cerr), cerr); err != nil {
			return err
		}
		f = os.NewFile(uintptr(fd), "tar-split")
		if _, err := f.Seek(0, 0); err != nil {
			f.Close()
			return &Error{Status: StatusIO, Message: "composefs: rewinding the tar-split: " + err.Error()}
		}
		return nil
	})
	return f, err
}
