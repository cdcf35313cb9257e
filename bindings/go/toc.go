package composefs

/*
#include <stdlib.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"encoding/json"
	"io"
	"runtime"
	"unsafe"
)

// tocArgs holds a TOC and a verity map as C arguments for one call.
type tocArgs struct {
	toc    *C.uint8_t
	n      C.size_t
	verity *C.char // NULL for no map
	pin    runtime.Pinner
	free   []unsafe.Pointer
}

// emptyTOC is what an empty TOC is passed as: the C API takes no NULL data pointer.
var emptyTOC [1]byte

// newTocArgs passes the TOC's own bytes, pinned for the call (a TOC is megabytes: a copy into C
// memory cost page faults and a memcpy on the path of every commit, and the library reads it
// only during the call), and encodes the verity map (object path -> hex fs-verity digest) as the
// JSON object the C API takes. Release with close.
func newTocArgs(toc []byte, verityDigests map[string]string) (*tocArgs, error) {
	a := &tocArgs{n: C.size_t(len(toc))}
	data := &emptyTOC[0]
	if len(toc) > 0 {
		data = &toc[0]
	}
	a.pin.Pin(data)
	a.toc = (*C.uint8_t)(unsafe.Pointer(data))
	if verityDigests != nil {
		js, err := json.Marshal(verityDigests)
		if err != nil {
			a.close()
			return nil, &Error{Status: StatusInvalidArgument, Message: "composefs: encoding the verity map: " + err.Error()}
		}
		if a.verity, err = cStringArg(string(js), "verity map"); err != nil {
			a.close()
			return nil, err
		}
		a.free = append(a.free, unsafe.Pointer(a.verity))
	}
	return a, nil
}

func (a *tocArgs) close() {
	for _, p := range a.free {
		C.free(p)
	}
	a.free = nil
	a.pin.Unpin()
	a.toc = nil
}

// GenerateDump writes the composefs dump of a TOC (the decompressed zstd:chunked TOC JSON) to w,
// byte-identical to containers/storage's dump.GenerateDump with each line's xattrs sorted.
// verityDigests maps object paths ("ab/cdef...") to fs-verity hex digests (nil for none). A TOC
// that is not valid is an ErrFormat.
func GenerateDump(w io.Writer, toc []byte, verityDigests map[string]string) error {
	args, err := newTocArgs(toc, verityDigests)
	if err != nil {
		return err
	}
	defer args.close()
	out, err := newOutputFd(w)
	if err != nil {
		return err
	}
	var cerr *C.cfs_error
	status := C.cfs_toc_generate_dump(args.toc, args.n, args.verity, C.int32_t(out.fd()), &cerr)
	runtime.KeepAlive(out.file)
	err = takeError(status, cerr)
	return firstError(out.finish(), err)
}

// WriteImageFromTOC writes the composefs blob (EROFS image) of a TOC to imagePath, which must not
// exist (ErrAlreadyExists), byte-identical to what containers/storage gets from
// `mkcomposefs --from-file -` on the dump of the same TOC and verity map, and returns the
// image's fs-verity digest.
func WriteImageFromTOC(imagePath string, toc []byte, verityDigests map[string]string) (Digest, error) {
	return writeTOCBlob(imagePath, toc, verityDigests, func(args *tocArgs, path *C.char, digest *C.uint8_t, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_toc_write_image(args.toc, args.n, args.verity, path, digest, cerr)
	})
}

// writeTOCBlob runs one of the C blob writers with the TOC, verity map and path in C memory.
func writeTOCBlob(imagePath string, toc []byte, verityDigests map[string]string,
	write func(args *tocArgs, path *C.char, digest *C.uint8_t, cerr **C.cfs_error) C.cfs_status) (Digest, error) {
	var digest Digest
	args, err := newTocArgs(toc, verityDigests)
	if err != nil {
		return digest, err
	}
	defer args.close()
	cpath, err := cStringArg(imagePath, "image path")
	if err != nil {
		return digest, err
	}
	defer freeCString(cpath)
	buf := (*C.uint8_t)(C.malloc(32))
	defer C.free(unsafe.Pointer(buf))
	var cerr *C.cfs_error
	if err := takeError(write(args, cpath, buf, &cerr), cerr); err != nil {
		return digest, err
	}
	copy(digest[:], unsafe.Slice((*byte)(unsafe.Pointer(buf)), 32))
	return digest, nil
}

// WriteLayerBlobFromTOC writes the composefs blob a containers/storage layer needs to imagePath
// (which must not exist: ErrAlreadyExists) and returns its fs-verity digest: as WriteImageFromTOC,
// but with the layer's OCI whiteouts (".wh.NAME", ".wh..wh..opq") as real overlay whiteouts and
// opaque directories, and without the 256 root whiteout stubs when one of lowerLayers (the layer
// dirs below this layer, top first: with composefs-data/ a composefs layer, else a classic one
// with its tree in diff/) has a top-level entry with a two-hex-digit name such as "/db", which a
// stub would hide. A layer with neither gets the bytes WriteImageFromTOC writes.
func WriteLayerBlobFromTOC(imagePath string, toc []byte, verityDigests map[string]string, lowerLayers []string) (Digest, error) {
	lowers, n, free, err := cStringArray(lowerLayers, "lower layer dir")
	if err != nil {
		return Digest{}, err
	}
	defer free()
	return writeTOCBlob(imagePath, toc, verityDigests, func(args *tocArgs, path *C.char, digest *C.uint8_t, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_toc_write_layer_blob(args.toc, args.n, args.verity, lowers, n, path, digest, cerr)
	})
}

// WriteLayerBlobFromStaged is WriteLayerBlobFromTOC for a layer whose pull (PullLayer) wrote
// stagedBlob (its composefs-data/composefs.blob, moved aside until the layer is committed): when
// that is the blob WriteLayerBlobFromTOC would write (no lower needs the root stubs left out, and
// each object has in it the fs-verity digest verityDigests gives), it is renamed to imagePath
// (same filesystem) without the TOC being parsed again; otherwise it is removed and the blob
// written from the TOC. stagedBlob is gone after success either way; a missing one is no error.
func WriteLayerBlobFromStaged(imagePath string, toc []byte, verityDigests map[string]string, lowerLayers []string, stagedBlob string) (Digest, error) {
	lowers, n, free, err := cStringArray(lowerLayers, "lower layer dir")
	if err != nil {
		return Digest{}, err
	}
	defer free()
	staged, err := cStringArg(stagedBlob, "staged blob")
	if err != nil {
		return Digest{}, err
	}
	defer freeCString(staged)
	return writeTOCBlob(imagePath, toc, verityDigests, func(args *tocArgs, path *C.char, digest *C.uint8_t, cerr **C.cfs_error) C.cfs_status {
		return C.cfs_toc_write_layer_blob_staged(args.toc, args.n, args.verity, lowers, n, staged, path, digest, cerr)
	})
}

// cStringArray copies strs into a C array of C strings (C memory: Go memory passed to C must not
// hold Go pointers), NULL when strs is empty; free releases it.
func cStringArray(strs []string, what string) (arr **C.char, n C.size_t, free func(), err error) {
	if len(strs) == 0 {
		return nil, 0, func() {}, nil
	}
	ptrSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	s := unsafe.Slice((**C.char)(C.calloc(C.size_t(len(strs)), ptrSize)), len(strs))
	free = func() {
		for i := range s {
			C.free(unsafe.Pointer(s[i]))
		}
		C.free(unsafe.Pointer(&s[0]))
	}
	for i, str := range strs {
		if s[i], err = cStringArg(str, what); err != nil {
			free()
			return nil, 0, nil, err
		}
	}
	return &s[0], C.size_t(len(strs)), free, nil
}

// ReadTOC reads, authenticates and decodes the TOC of the zstd:chunked blob at blobPath. With the
// layer's OCI annotations, the TOC digest there authenticates it; with nil annotations the TOC is
// located through the blob's footer and not authenticated. It returns the decompressed TOC JSON
// and its digest ("sha256:<hex>").
func ReadTOC(blobPath string, annotations map[string]string) (toc []byte, tocDigest string, err error) {
	cpath, err := cStringArg(blobPath, "blob path")
	if err != nil {
		return nil, "", err
	}
	defer freeCString(cpath)
	var cann *C.char
	if annotations != nil {
		js, err := json.Marshal(annotations)
		if err != nil {
			return nil, "", &Error{Status: StatusInvalidArgument, Message: "composefs: encoding the annotations: " + err.Error()}
		}
		if cann, err = cStringArg(string(js), "annotations"); err != nil {
			return nil, "", err
		}
		defer freeCString(cann)
	}
	var ctoc, cdigest *C.char
	var cerr *C.cfs_error
	if err := takeError(C.cfs_toc_read(cpath, cann, &ctoc, &cdigest, &cerr), cerr); err != nil {
		return nil, "", err
	}
	tocDigest = takeString(cdigest)
	return []byte(takeString(ctoc)), tocDigest, nil
}
