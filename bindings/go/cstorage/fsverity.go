package cstorage

/*
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fsverity.h>

// The ioctls containers/storage's pkg/fsverity issues: sha256, 4096-byte blocks, no salt.
static int cfs_go_enable_verity(int fd) {
	struct fsverity_enable_arg arg;
	memset(&arg, 0, sizeof arg);
	arg.version = 1;
	arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
	arg.block_size = 4096;
	return ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) < 0 ? errno : 0;
}

static int cfs_go_measure_verity(int fd, unsigned char *out, unsigned short *out_size) {
	struct {
		struct fsverity_digest d;
		unsigned char buf[64];
	} m;
	memset(&m, 0, sizeof m);
	m.d.digest_size = sizeof m.buf;
	if (ioctl(fd, FS_IOC_MEASURE_VERITY, &m) < 0)
		return errno;
	memcpy(out, m.d.digest, m.d.digest_size);
	*out_size = m.d.digest_size;
	return 0;
}
*/
import "C"

import (
	"encoding/hex"
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// EnableVerity enables fs-verity (sha256, 4096-byte blocks) on the file open read-only as fd;
// description names it in the error. A file that has fs-verity already is no error. Where the
// filesystem has no fs-verity the error matches syscall.EOPNOTSUPP or syscall.ENOTTY, as
// containers/storage expects.
//
// Replaces containers/storage's pkg/fsverity.EnableVerity (same signature and errors).
func EnableVerity(description string, fd int) error {
	if e := C.cfs_go_enable_verity(C.int(fd)); e != 0 && syscall.Errno(e) != syscall.EEXIST {
		return fmt.Errorf("failed to enable verity for %q: %w", description, syscall.Errno(e))
	}
	return nil
}

// MeasureVerity returns the fs-verity digest of the file open as fd, as lowercase hex, measured
// by the kernel (the file must have fs-verity: ENODATA otherwise).
//
// Replaces containers/storage's pkg/fsverity.MeasureVerity (same signature and result).
func MeasureVerity(description string, fd int) (string, error) {
	buf := (*C.uchar)(C.malloc(64))
	defer C.free(unsafe.Pointer(buf))
	var size C.ushort
	if e := C.cfs_go_measure_verity(C.int(fd), buf, &size); e != 0 {
		return "", fmt.Errorf("failed to measure verity for %q: %w", description, syscall.Errno(e))
	}
	return hex.EncodeToString(C.GoBytes(unsafe.Pointer(buf), C.int(size))), nil
}

// IsVerityUnsupported says whether err (from EnableVerity or MeasureVerity) means that the
// filesystem or kernel has no fs-verity, the case containers/storage tolerates.
func IsVerityUnsupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.ENOTSUP)
}
