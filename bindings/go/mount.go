package composefs

/*
#include <stdlib.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"os"
	"strconv"
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
	// NoReuseErofs mounts a new EROFS every time instead of keeping the EROFS mounts of derived
	// images in this process for later mounts of the same image (see MountCleanup).
	NoReuseErofs bool
	// CacheLimits bounds the derived-image cache dir (least recently used evicted first); nil
	// means the library's defaults (64 images, 512 MiB).
	CacheLimits *CacheLimits
}

// CacheLimits bounds the derived-image cache dir.
type CacheLimits struct {
	MaxImages uint64
	MaxBytes  uint64
}

// MountCleanupReport says what MountCleanup removed.
type MountCleanupReport struct {
	KeptMountsReleased  uint64 // EROFS mounts this process kept for reuse, released
	ImagesEvicted       uint64 // cached derived images beyond the limits, not in use
	TemporariesRemoved  uint64 // unfinished images and temp dirs whose process is gone
	StaleMountsDetached uint64 // mounts a killed mount sequence left in those temp dirs
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
	flatten, reuse := "", ""
	if o.NoFlatten {
		flatten = "false"
	}
	if o.NoReuseErofs {
		reuse = "false"
	}
	maxImages, maxBytes := "", ""
	if o.CacheLimits != nil {
		maxImages = strconv.FormatUint(o.CacheLimits.MaxImages, 10)
		maxBytes = strconv.FormatUint(o.CacheLimits.MaxBytes, 10)
	}
	for _, kv := range [][2]string{
		{"upper", o.UpperDir}, {"work", o.WorkDir}, {"verity", string(o.Verity)},
		{"erofs_backing", string(o.ErofsBacking)}, {"stub_cache_dir", o.StubCacheDir}, {"flatten", flatten},
		{"reuse_erofs", reuse}, {"cache_max_images", maxImages}, {"cache_max_bytes", maxBytes},
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

// MountCleanup cleans up after mounting: it releases the EROFS mounts this process keeps for
// reuse, removes what killed mount sequences left behind (unfinished derived images, private temp
// dirs and mounts attached in them), and evicts cached derived images beyond opts.CacheLimits
// (zero limits remove every image not in use) from opts.StubCacheDir. opts may be nil (defaults).
// Mounted stacks are not affected; an image another process is about to mount is never removed.
func MountCleanup(opts *MountOptions) (MountCleanupReport, error) {
	copts, err := opts.toC()
	if err != nil {
		return MountCleanupReport{}, err
	}
	defer C.cfs_mount_options_free(copts)
	var r C.cfs_mount_cleanup_report
	var cerr *C.cfs_error
	if err := takeError(C.cfs_mount_cleanup(copts, &r, &cerr), cerr); err != nil {
		return MountCleanupReport{}, err
	}
	return MountCleanupReport{
		KeptMountsReleased:  uint64(r.kept_mounts_released),
		ImagesEvicted:       uint64(r.images_evicted),
		TemporariesRemoved:  uint64(r.temporaries_removed),
		StaleMountsDetached: uint64(r.stale_mounts_detached),
	}, nil
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

// OpenBlobMount mounts one composefs blob as a detached read-only EROFS (from the file where the
// kernel can, else through a loop device freed with the mount) and returns the mount's fd as a
// file: read through "/proc/self/fd/<fd>/<path>", attach it with move_mount, or give it to
// overlayfs; closing it unmounts. expectedDigest is "" or the blob's fs-verity digest (64 hex
// digits), checked on the open file before mounting (ErrVerification on a mismatch). A file that
// is not a composefs image is an ErrFormat. This is for callers that compose the overlay
// themselves; MountStack does the whole stack.
func OpenBlobMount(blobPath, expectedDigest string) (*os.File, error) {
	cpath, err := cStringArg(blobPath, "blob path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	var cdigest *C.char
	if expectedDigest != "" {
		if cdigest, err = cStringArg(expectedDigest, "expected digest"); err != nil {
			return nil, err
		}
		defer freeCString(cdigest)
	}
	var fd C.int32_t
	var cerr *C.cfs_error
	if err := takeError(C.cfs_mount_blob_open(cpath, cdigest, &fd, &cerr), cerr); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), blobPath), nil
}

// MountBlob is OpenBlobMount, attached at mountpoint (an existing directory); unmount it with
// umount2(mountpoint, MNT_DETACH). On failure nothing stays mounted.
func MountBlob(blobPath, expectedDigest, mountpoint string) error {
	cpath, err := cStringArg(blobPath, "blob path")
	if err != nil {
		return err
	}
	defer freeCString(cpath)
	cmount, err := cStringArg(mountpoint, "mountpoint")
	if err != nil {
		return err
	}
	defer freeCString(cmount)
	var cdigest *C.char
	if expectedDigest != "" {
		if cdigest, err = cStringArg(expectedDigest, "expected digest"); err != nil {
			return err
		}
		defer freeCString(cdigest)
	}
	var cerr *C.cfs_error
	return takeError(C.cfs_mount_blob(cpath, cdigest, cmount, &cerr), cerr)
}
