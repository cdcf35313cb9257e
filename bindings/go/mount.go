package composefs

/*
#include <stdlib.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"unsafe"
)

// ErofsBacking says how an EROFS image is mounted.
type ErofsBacking string

// The EROFS backings.
const (
	ErofsAuto ErofsBacking = "auto" // from the file where the kernel can, else a loop device (default)
	ErofsLoop ErofsBacking = "loop" // always a loop device
)

// MountOptions are the options of MountStack. A nil *MountOptions means the defaults: read-only,
// fs-verity "if-available", EROFS from the file where the kernel can, adjacent composefs layers
// flattened into one cached image.
type MountOptions struct {
	// UpperDir and WorkDir, both set, make the mount read-write.
	UpperDir, WorkDir string
	// Verity is the fs-verity policy; "" means VerityIfAvailable. VerityRequire needs an expected
	// digest for every composefs layer and gives the overlay verity=require.
	Verity VerityPolicy
	// ErofsBacking is "" (ErofsAuto) or ErofsLoop.
	ErofsBacking ErofsBacking
	// StubCacheDir is where derived images (stub-less copies, flattened runs) are kept; "" means
	// the library's default.
	StubCacheDir string
	// NoFlatten mounts one EROFS per composefs layer instead of merging adjacent ones.
	NoFlatten bool
}

// Layer is one layer of a stack.
type Layer struct {
	// Dir is the layer directory: with composefs-data/ a composefs layer (blob
	// composefs-data/composefs.blob, objects in diff/), else a classic layer (tree in diff/).
	Dir string
	// BlobDigest, when set, is the expected fs-verity digest (64 hex digits) of the layer's blob:
	// a mismatch refuses the mount with ErrVerification.
	BlobDigest string
}

func (o *MountOptions) toC() (*C.cfs_mount_options, error) {
	var c *C.cfs_mount_options
	var cerr *C.cfs_error
	if err := takeError(C.cfs_mount_options_new(&c, &cerr), cerr); err != nil {
		return nil, err
	}
	if o == nil {
		return c, nil
	}
	set := func(key, value string) error {
		if value == "" {
			return nil
		}
		ckey, err := cStringArg(key, "mount option name")
		if err != nil {
			return err
		}
		defer freeCString(ckey)
		cval, err := cStringArg(value, "mount option "+key)
		if err != nil {
			return err
		}
		defer freeCString(cval)
		var cerr *C.cfs_error
		return takeError(C.cfs_mount_options_set(c, ckey, cval, &cerr), cerr)
	}
	flatten := ""
	if o.NoFlatten {
		flatten = "false"
	}
	for _, kv := range [][2]string{
		{"upper", o.UpperDir}, {"work", o.WorkDir}, {"verity", string(o.Verity)},
		{"erofs_backing", string(o.ErofsBacking)}, {"stub_cache_dir", o.StubCacheDir}, {"flatten", flatten},
	} {
		if err := set(kv[0], kv[1]); err != nil {
			C.cfs_mount_options_free(c)
			return nil, err
		}
	}
	return c, nil
}

// MountStack mounts layers (top first) as one overlay on mountpoint. On failure nothing stays
// mounted and no loop device stays attached. It needs CAP_SYS_ADMIN. A blob that does not have
// its expected digest, or VerityRequire without one, is an ErrVerification.
func MountStack(layers []Layer, mountpoint string, opts *MountOptions) error {
	if len(layers) == 0 {
		return &Error{Status: StatusInvalidArgument, Message: "composefs: MountStack needs at least one layer"}
	}
	copts, err := opts.toC()
	if err != nil {
		return err
	}
	defer C.cfs_mount_options_free(copts)
	cmount, err := cStringArg(mountpoint, "mountpoint")
	if err != nil {
		return err
	}
	defer freeCString(cmount)
	// The arrays of pointers live in C memory: Go memory passed to C must not hold Go pointers.
	n := len(layers)
	ptrSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	dirs := unsafe.Slice((**C.char)(C.calloc(C.size_t(n), ptrSize)), n)
	digests := unsafe.Slice((**C.char)(C.calloc(C.size_t(n), ptrSize)), n)
	defer func() {
		for i := range dirs {
			C.free(unsafe.Pointer(dirs[i]))
			C.free(unsafe.Pointer(digests[i]))
		}
		C.free(unsafe.Pointer(&dirs[0]))
		C.free(unsafe.Pointer(&digests[0]))
	}()
	for i, l := range layers {
		if dirs[i], err = cStringArg(l.Dir, "layer dir"); err != nil {
			return err
		}
		if l.BlobDigest != "" {
			if digests[i], err = cStringArg(l.BlobDigest, "blob digest"); err != nil {
				return err
			}
		}
	}
	var cerr *C.cfs_error
	status := C.cfs_mount_stack(copts, &dirs[0], &digests[0], C.size_t(n), cmount, &cerr)
	return takeError(status, cerr)
}

// Unmount unmounts a stack mounted with MountStack. A path that is not an overlay mountpoint is
// refused with ErrInvalidArgument.
func Unmount(mountpoint string) error {
	cmount, err := cStringArg(mountpoint, "mountpoint")
	if err != nil {
		return err
	}
	defer freeCString(cmount)
	var cerr *C.cfs_error
	return takeError(C.cfs_mount_unmount(cmount, &cerr), cerr)
}

// BlobDigest returns the fs-verity digest (64 lowercase hex digits) of a blob, to keep as the
// layer's expected Layer.BlobDigest: measured by the kernel when the file has fs-verity, else
// computed.
func BlobDigest(blobPath string) (string, error) {
	cpath, err := cStringArg(blobPath, "blob path")
	if err != nil {
		return "", err
	}
	defer freeCString(cpath)
	var out *C.char
	var cerr *C.cfs_error
	if err := takeError(C.cfs_mount_blob_digest(cpath, &out, &cerr), cerr); err != nil {
		return "", err
	}
	return takeString(out), nil
}
