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
//   - GenerateLayerBlob replaces it where the caller passes the layer's lowers, with the
//     whiteout and root-stub defects of that pipeline fixed (SPEC §10.1, §10.2).
//   - MountComposefsBlob and OpenComposefsMount replace overlay's mountComposefsBlob and
//     openComposefsMount (the blob's EROFS, attached or detached; loop device fallback).
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
	"syscall"

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

// MountComposefsBlob mounts the composefs blob of the layer whose composefs-data directory is
// dataDir (<layer>/composefs-data, as containers/storage's getComposefsData gives it) read-only as
// EROFS at mountPoint: from the file on kernels >= 6.12, else through a loop device that is freed
// with the mount. The caller adds the layer's diff directory as a data-only lower ("::diff") of
// its overlay, as containers/storage does, and unmounts with Unmount (or MNT_DETACH once the
// overlay holds the layer). A blob without the composefs header magic is refused (ErrFormat;
// containers/storage mounts any file).
//
// Replaces containers/storage's overlay mountComposefsBlob (same signature and result).
func MountComposefsBlob(dataDir, mountPoint string) error {
	return composefs.MountBlob(ComposefsBlobPath(dataDir), "", mountPoint)
}

// OpenComposefsMount mounts the blob of dataDir as MountComposefsBlob does, but detached: it
// returns the fd of a mount attached nowhere, for reading the layer's metadata through
// "/proc/self/fd/<fd>/<path>" (containers/storage's DiffGetter reads redirects that way).
// Closing the fd unmounts it.
//
// Replaces containers/storage's overlay openComposefsMount (same signature and result).
func OpenComposefsMount(dataDir string) (int, error) {
	f, err := composefs.OpenBlobMount(ComposefsBlobPath(dataDir), "")
	if err != nil {
		return -1, err
	}
	// The caller owns the fd from here: detach it from the *os.File without closing it.
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return -1, fmt.Errorf("cstorage: dup of the EROFS mount fd: %w", err)
	}
	syscall.CloseOnExec(fd)
	return fd, nil
}

// Unmount unmounts a blob mounted with MountComposefsBlob (lazily, as containers/storage
// unmounts its EROFS mounts).
func Unmount(mountPoint string) error {
	if err := syscall.Unmount(mountPoint, syscall.MNT_DETACH); err != nil {
		return &os.PathError{Op: "umount", Path: mountPoint, Err: err}
	}
	return nil
}

// StagedTOC is a pulled layer's TOC JSON with the composefs blob its pull wrote, moved aside (in
// the layer's staging dir) until containers/storage commits the layer. As the "toc" artifact of
// the differ's output it lets GenerateLayerBlob take that blob instead of writing the same bytes
// again (composefs.WriteLayerBlobFromStaged).
type StagedTOC struct {
	TOC  []byte
	Blob string
}

// tocJSON gives the TOC JSON of what containers/storage passes around: the decoded TOC (its
// *minimal.TOC, encoded again with encoding/json, whose field tags are those of the format) or
// already the JSON bytes ([]byte, json.RawMessage or string).
func tocJSON(toc any) ([]byte, error) {
	switch t := toc.(type) {
	case StagedTOC:
		return t.TOC, nil
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
	if staged, ok := toc.(StagedTOC); ok {
		// Only the layer mode's blob is ever taken: this one is written from the TOC.
		defer os.Remove(staged.Blob)
	}
	return writeBlob(toc, composefsDir, func(blob string, tocBytes []byte) error {
		_, err := composefs.WriteImageFromTOC(blob, tocBytes, verityDigests)
		return err
	})
}

// GenerateLayerBlob writes the composefs blob of a layer's TOC to <composefsDir>/composefs.blob
// as GenerateComposefsBlob does, with the two defects of containers/storage's pipeline fixed
// (see composefs.WriteLayerBlobFromTOC): the layer's OCI whiteouts become real overlay whiteouts
// and opaque directories, so deletions hide what lower layers have; and the root whiteout stubs
// are left out when a layer of lowerLayerDirs (the layer dirs <graphroot>/overlay/<id> below
// this layer, top first) has a top-level entry such as "/db" that a stub would hide. For a layer
// with neither the blob is byte-identical to GenerateComposefsBlob's. Given a StagedTOC, the
// blob its pull wrote is taken where it is that blob (composefs.WriteLayerBlobFromStaged).
//
// Replaces containers/storage's overlay generateComposeFsBlob, given the layer's lowers.
func GenerateLayerBlob(verityDigests map[string]string, toc any, composefsDir string, lowerLayerDirs []string) error {
	return writeBlob(toc, composefsDir, func(blob string, tocBytes []byte) error {
		var err error
		if staged, ok := toc.(StagedTOC); ok {
			_, err = composefs.WriteLayerBlobFromStaged(blob, tocBytes, verityDigests, lowerLayerDirs, staged.Blob)
		} else {
			_, err = composefs.WriteLayerBlobFromTOC(blob, tocBytes, verityDigests, lowerLayerDirs)
		}
		return err
	})
}

// writeBlob makes composefsDir (0700), writes the blob with write, then enables fs-verity on it
// where the filesystem supports it (best effort, as containers/storage, which only logs a
// failure).
func writeBlob(toc any, composefsDir string, write func(blob string, toc []byte) error) error {
	tocBytes, err := tocJSON(toc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(composefsDir, 0o700); err != nil {
		return err
	}
	blob := ComposefsBlobPath(composefsDir)
	if err := write(blob, tocBytes); err != nil {
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
