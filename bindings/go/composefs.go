// Package composefs is the Go binding of libcomposefs_storage, the composefs layer path of
// containers/storage (convert image layers to composefs form, dedup their files, mount them).
//
// It links the C library through pkg-config ("composefs-storage"): dynamically by default, or
// statically with the build tag "static" (go build -tags static), which uses
// `pkg-config --static`.
//
// Every object that owns a C handle (such as Config) frees it in an idempotent Close; a finalizer
// frees it too if Close is forgotten. Errors are *Error values that match the sentinels of this
// package (ErrFormat, ErrNotFound, ...) with errors.Is, and the OS error behind an I/O failure.
package composefs

/*
#cgo !static pkg-config: composefs-storage
#cgo static pkg-config: --static composefs-storage
// The static archive sits next to the shared library: name it, and drop the then unneeded .so.
#cgo static LDFLAGS: -l:libcomposefs_storage.a -Wl,--as-needed
#include <stdlib.h>
#include <string.h>
#include <composefs-storage.h>

#if CFS_ABI_VERSION != 0
#error "composefs-storage.h is for another C ABI: these Go bindings need CFS_ABI_VERSION 0"
#endif
*/
import "C"

import (
	"strings"
	"unsafe"
)

// HeaderABIVersion is the C ABI version these bindings were written for (CFS_ABI_VERSION).
const HeaderABIVersion = uint32(C.CFS_ABI_VERSION)

// HeaderVersion is the library version of the header these bindings were compiled with.
const HeaderVersion = C.CFS_VERSION_STRING

// Version returns the version of the loaded library (e.g. "0.1.0").
func Version() string {
	return C.GoString(C.cfs_version())
}

// ABIVersion returns the C ABI version of the loaded library; it equals HeaderABIVersion.
func ABIVersion() uint32 {
	return uint32(C.cfs_abi_version())
}

// cStringArg converts a Go string argument for a C call; the caller frees it with freeCString.
// A string with a NUL byte cannot cross into C unchanged, so it is refused.
func cStringArg(s string, what string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, &Error{Status: StatusInvalidArgument, Message: "composefs: " + what + " contains a NUL byte"}
	}
	return C.CString(s), nil
}

// takeString copies a string the library returned and frees the C copy (cfs_string_free).
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.cfs_string_free(s)
	return C.GoString(s)
}

// freeCString frees a string made by cString.
func freeCString(s *C.char) {
	C.free(unsafe.Pointer(s))
}

// Large buffers (a TOC is megabytes) come from C memory into Go memory by a memcpy in C, not a
// copy in Go: copying into fresh memory page-faults for milliseconds, and a garbage collection that
// starts meanwhile cannot preempt Go's memmove, so it signals the goroutine again and again until
// the copy ends (20-40 ms of a 0.3 s pull in containers/storage). During a C call the goroutine's
// stack can be scanned without stopping it.

// goBytes copies n bytes of C memory into a new Go slice.
func goBytes(data *C.uint8_t, n C.size_t) []byte {
	b := make([]byte, int(n))
	if n > 0 {
		C.memcpy(unsafe.Pointer(&b[0]), unsafe.Pointer(data), n)
	}
	return b
}
