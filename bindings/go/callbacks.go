package composefs

// The functions the C library calls back. A file with //export may only declare C functions in
// its preamble, so the C glue that passes them to the library lives in convert.go.

/*
#include <stdint.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// progressReporter is what a progress handle holds: a conversion's *progressState or a pull's
// *pullState.
type progressReporter interface {
	report(bytes, entries uint64) bool
}

// cfsGoProgress is the cfs_progress_fn of every conversion and pull: userdata is a cgo.Handle of
// the call's progressReporter. A non-zero return cancels the call.
//
//export cfsGoProgress
func cfsGoProgress(userdata unsafe.Pointer, bytes C.uint64_t, entries C.uint64_t) C.int {
	st := cgo.Handle(uintptr(userdata)).Value().(progressReporter)
	if st.report(uint64(bytes), uint64(entries)) {
		return 0
	}
	return 1
}

// cfsGoFetchBegin is the cfs_fetch_begin_fn of every pull: userdata is a cgo.Handle of the
// call's *pullState.
//
//export cfsGoFetchBegin
func cfsGoFetchBegin(userdata unsafe.Pointer, ranges *C.cfs_byte_range, n C.size_t) C.cfs_status {
	st := cgo.Handle(uintptr(userdata)).Value().(*pullState)
	chunks := make([]Chunk, int(n))
	for i, r := range unsafe.Slice(ranges, int(n)) {
		chunks[i] = Chunk{Offset: uint64(r.offset), Length: uint64(r.length)}
	}
	return C.cfs_status(st.begin(chunks))
}

// cfsGoFetchRead is the cfs_fetch_read_fn of every pull: it fills buf (C memory) from the
// current fetch.
//
//export cfsGoFetchRead
func cfsGoFetchRead(userdata unsafe.Pointer, buf *C.uint8_t, n C.size_t) C.int64_t {
	st := cgo.Handle(uintptr(userdata)).Value().(*pullState)
	return C.int64_t(st.read(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))))
}
