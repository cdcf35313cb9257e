package composefs

// The functions the C library calls back. A file with //export may only declare C functions in
// its preamble, so the C glue that passes them to the library lives in convert.go.

/*
#include <stdint.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// cfsGoProgress is the cfs_progress_fn of every conversion: userdata is a cgo.Handle of the
// call's *progressState. A non-zero return cancels the conversion.
//
//export cfsGoProgress
func cfsGoProgress(userdata unsafe.Pointer, bytes C.uint64_t, entries C.uint64_t) C.int {
	st := cgo.Handle(uintptr(userdata)).Value().(*progressState)
	if st.report(uint64(bytes), uint64(entries)) {
		return 0
	}
	return 1
}
