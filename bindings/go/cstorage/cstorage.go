// Package cstorage offers the composefs pieces of containers/storage's overlay driver and
// pkg/chunked with their signatures, implemented by libcomposefs_storage, so that
// containers/storage can switch to the library with a few lines and no mkcomposefs binary.
//
// What each function replaces in containers/storage (drivers/overlay/composefs.go,
// pkg/chunked, pkg/fsverity):
//
//   - GenerateComposefsBlob replaces overlay's generateComposeFsBlob: dump.GenerateDump piped
//     into an exec of `mkcomposefs --from-file - -`, written to <composefsDir>/composefs.blob,
//     and fsverity.EnableVerity on it. The blob is byte-identical to mkcomposefs 1.0.8's.
//   - GenerateDump replaces pkg/chunked/dump.GenerateDump: the composefs dump of a TOC,
//     byte-identical to it (with each line's xattrs sorted: upstream writes them in Go map
//     order).
//   - MountComposefsBlob replaces overlay's mountComposefsBlob (see its doc for the one
//     difference).
//   - EnableVerity and MeasureVerity replace pkg/fsverity.EnableVerity and
//     pkg/fsverity.MeasureVerity.
//   - BlobAtFetcher adapts pkg/chunked's ImageSourceSeekable.GetBlobAt for composefs.PullLayer,
//     which replaces pkg/chunked's partial pull of a zstd:chunked layer.
//   - RegularFilePathForValidatedDigest replaces pkg/chunked/internal/path's
//     RegularFilePathForValidatedDigest: the flat object path of a content digest.
//
// Errors from the library match the sentinels of the parent package (composefs.ErrFormat, ...)
// with errors.Is.
package cstorage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	composefs "github.com/composefs-storage/composefs-storage/bindings/go"
)

// RegularFilePathForValidatedDigest returns the path of the flat object holding the content
// with digest d ("sha256:<64 hex>"), relative to the layer's diff directory: "<2 hex>/<62 hex>".
// d is a string or a github.com/opencontainers/go-digest Digest. A digest that is not a valid
// sha256 digest is an error matching composefs.ErrInvalidArgument.
//
// Replaces containers/storage's pkg/chunked/internal/path.RegularFilePathForValidatedDigest.
func RegularFilePathForValidatedDigest[D ~string](d D) (string, error) {
	s := string(d)
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", &composefs.Error{Status: composefs.StatusInvalidArgument,
			Message: "cstorage: " + quote(s) + " is not a sha256 digest (sha256: and 64 lowercase hex digits)"}
	}
	return hexPart[:2] + "/" + hexPart[2:], nil
}

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return "\"" + s + "\""
}

// ComposefsBlobPath is the blob file inside a composefs-data directory
// (containers/storage's getComposefsBlob).
func ComposefsBlobPath(dataDir string) string {
	return filepath.Join(dataDir, "composefs.blob")
}

// MountComposefsBlob mounts the composefs layer whose composefs-data directory is dataDir
// (<layer>/composefs-data, as containers/storage's getComposefsData gives it) read-only at
// mountPoint.
//
// Replaces containers/storage's overlay mountComposefsBlob. The difference: containers/storage
// mounts the bare EROFS blob there and then adds the layer's diff directory as a data-only
// lower ("::diff") of the final overlay; this mounts the complete layer (the blob with its
// objects from the diff directory next to dataDir), so the caller uses mountPoint as an
// ordinary lower directory and drops the data-only lower. Unmount it with Unmount.
func MountComposefsBlob(dataDir, mountPoint string) error {
	dataDir = filepath.Clean(dataDir)
	if filepath.Base(dataDir) != "composefs-data" {
		return &composefs.Error{Status: composefs.StatusInvalidArgument,
			Message: "cstorage: " + quote(dataDir) + " is not a layer's composefs-data directory"}
	}
	layerDir := filepath.Dir(dataDir)
	return composefs.MountStack([]composefs.Layer{{Dir: layerDir}}, mountPoint, nil)
}

// Unmount unmounts a mount made by MountComposefsBlob.
func Unmount(mountPoint string) error {
	return composefs.Unmount(mountPoint)
}

// tocJSON gives the TOC JSON of what containers/storage passes around: the decoded TOC (its
// *minimal.TOC, encoded again with encoding/json, whose field tags are those of the format) or
// already the JSON bytes ([]byte, json.RawMessage or string).
func tocJSON(toc any) ([]byte, error) {
	switch t := toc.(type) {
	case []byte:
		return t, nil
	case json.RawMessage:
		return t, nil
	case string:
		return []byte(t), nil
	case nil:
		return nil, &composefs.Error{Status: composefs.StatusNullArgument, Message: "cstorage: no TOC"}
	}
	b, err := json.Marshal(toc)
	if err != nil {
		return nil, &composefs.Error{Status: composefs.StatusInvalidArgument, Message: "cstorage: encoding the TOC: " + err.Error()}
	}
	return b, nil
}

// GenerateDump returns the composefs dump of a TOC, byte-identical to containers/storage's
// dump.GenerateDump with each line's xattrs sorted. verityDigests maps object paths
// ("ab/cdef...") to fs-verity hex digests, as containers/storage builds it.
//
// Replaces containers/storage's pkg/chunked/dump.GenerateDump (same signature).
func GenerateDump(tocI any, verityDigests map[string]string) (io.Reader, error) {
	toc, err := tocJSON(tocI)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := composefs.GenerateDump(&buf, toc, verityDigests); err != nil {
		return nil, err
	}
	return &buf, nil
}

// GenerateComposefsBlob writes the composefs blob of a TOC to <composefsDir>/composefs.blob
// (creating composefsDir with mode 0700; the blob must not exist yet), byte-identical to what
// containers/storage writes through mkcomposefs, then enables fs-verity on it where the
// filesystem supports it (best effort, as containers/storage, which only logs a failure).
//
// Replaces containers/storage's overlay generateComposeFsBlob (same signature): no
// mkcomposefs binary needed.
func GenerateComposefsBlob(verityDigests map[string]string, toc any, composefsDir string) error {
	tocBytes, err := tocJSON(toc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(composefsDir, 0o700); err != nil {
		return err
	}
	blob := ComposefsBlobPath(composefsDir)
	if _, err := composefs.WriteImageFromTOC(blob, tocBytes, verityDigests); err != nil {
		return err
	}
	if f, err := os.Open(blob); err == nil {
		EnableVerity("manifest file", int(f.Fd()))
		f.Close()
	}
	return nil
}

// BlobAtFetcher adapts containers/storage's ImageSourceSeekable.GetBlobAt (containers/image's
// blob-chunk accessor: a channel of readers, one per chunk, and a channel of errors) into the
// composefs.Fetcher that composefs.PullLayer takes. makeChunk builds its ImageSourceChunk;
// tooManyRanges, when not nil, recognises the error that asks for fewer ranges (containers/image's
// BadPartialRequestError): it is then reported as composefs.ErrTooManyRanges.
//
//	fetch := cstorage.BlobAtFetcher(iss.GetBlobAt,
//		func(off, n uint64) ImageSourceChunk { return ImageSourceChunk{Offset: off, Length: n} },
//		func(err error) bool { var e ErrBadRequest; return errors.As(err, &e) })
//	res, err := composefs.PullLayer(ctx, fetch, blobSize, layerDir, opts)
//
// Replaces the range fetching of containers/storage's pkg/chunked (retrieveMissingFiles and its
// halving of the ranges on ErrBadRequest, which the library does).
func BlobAtFetcher[Chunk any](getBlobAt func([]Chunk) (chan io.ReadCloser, chan error, error),
	makeChunk func(offset, length uint64) Chunk, tooManyRanges func(error) bool) composefs.Fetcher {
	return func(ctx context.Context, chunks []composefs.Chunk) (io.Reader, error) {
		cs := make([]Chunk, len(chunks))
		for i, c := range chunks {
			cs[i] = makeChunk(c.Offset, c.Length)
		}
		streams, errs, err := getBlobAt(cs)
		if err != nil {
			if tooManyRanges != nil && tooManyRanges(err) {
				return nil, fmt.Errorf("%w: %w", composefs.ErrTooManyRanges, err)
			}
			return nil, err
		}
		return composefs.ConcatStreams(streams, errs), nil
	}
}
