package composefs

/*
#include <composefs-storage.h>
*/
import "C"

import (
	"encoding/json"
	"io"
	"runtime"
)

// CompressResult describes a zstd:chunked blob written by Compress.
type CompressResult struct {
	// Annotations are the layer's OCI annotations (TOC digest and the positions of the TOC and
	// the tar-split), as a manifest carries them and as Pull takes them.
	Annotations map[string]string `json:"annotations"`
	TOCDigest   string            `json:"tocDigest"`
	BlobDigest  string            `json:"blobDigest"`
	BlobSize    uint64            `json:"blobSize"`
	DiffID      string            `json:"diffID"`
	TarSize     uint64            `json:"tarSize"`
}

// Compress reads a layer (plain tar, gzip or zstd, recognised by magic) from r and writes it to
// w as a zstd:chunked blob, as containers/storage's compressor does: each file's data in its own
// zstd frames, large files split into rollsum chunks, then the TOC, the tar-split and the footer.
// level is the zstd level (1-22; 0 for containers/storage's default). On error, what was written
// to w is garbage.
func Compress(w io.Writer, r io.Reader, level int) (CompressResult, error) {
	var res CompressResult
	in, err := newInputFd(r)
	if err != nil {
		return res, err
	}
	out, err := newOutputFd(w)
	if err != nil {
		return res, firstError(in.finish(), err)
	}
	var cerr *C.cfs_error
	var js *C.char
	status := C.cfs_chunked_compress(C.int32_t(in.fd()), C.int32_t(out.fd()), C.int32_t(level), &js, &cerr)
	runtime.KeepAlive(in.file)
	runtime.KeepAlive(out.file)
	err = takeError(status, cerr)
	err = firstError(firstError(in.finish(), out.finish()), err)
	if err != nil {
		return res, err
	}
	if jerr := json.Unmarshal([]byte(takeString(js)), &res); jerr != nil {
		return res, &Error{Status: StatusInternal, Message: "composefs: decoding the compress result: " + jerr.Error()}
	}
	return res, nil
}
