package composefs

/*
#include <composefs-storage.h>
*/
import "C"

import (
	"syscall"
)

// Status is the library's status code (cfs_status). The numbers are fixed by the C ABI.
type Status int

// The status codes; they mirror cfs_status in composefs-storage.h.
const (
	StatusOK               Status = C.CFS_OK
	StatusInvalidArgument  Status = C.CFS_STATUS_INVALID_ARGUMENT
	StatusNullArgument     Status = C.CFS_STATUS_NULL_ARGUMENT
	StatusIO               Status = C.CFS_STATUS_IO
	StatusFormat           Status = C.CFS_STATUS_FORMAT
	StatusUnsupported      Status = C.CFS_STATUS_UNSUPPORTED
	StatusCancelled        Status = C.CFS_STATUS_CANCELLED
	StatusInternal         Status = C.CFS_STATUS_INTERNAL
	StatusNotFound         Status = C.CFS_STATUS_NOT_FOUND
	StatusAlreadyExists    Status = C.CFS_STATUS_ALREADY_EXISTS
	StatusVerification     Status = C.CFS_STATUS_VERIFICATION
	StatusLimitExceeded    Status = C.CFS_STATUS_LIMIT_EXCEEDED
	StatusPermissionDenied Status = C.CFS_STATUS_PERMISSION_DENIED
)

// String returns the status's C name, e.g. "CFS_STATUS_FORMAT".
func (s Status) String() string {
	return C.GoString(C.cfs_status_name(C.int(s)))
}

// Error is a failure reported by the library: its status, a message that names the input (file,
// line, key where relevant), and the OS error behind an I/O failure.
type Error struct {
	Status  Status
	Message string
	Errno   syscall.Errno // 0 unless an OS call failed
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "composefs-storage: " + e.Status.String()
	}
	return e.Message
}

// Is makes errors.Is(err, ErrFormat) (and the other sentinels) match any error of that status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Errno == 0 && t.Status == e.Status
}

// Unwrap exposes the OS error, so that errors.Is(err, fs.ErrNotExist) works for a missing file.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Sentinels to test an error's status with errors.Is.
var (
	ErrInvalidArgument  = &Error{Status: StatusInvalidArgument}
	ErrNullArgument     = &Error{Status: StatusNullArgument}
	ErrIO               = &Error{Status: StatusIO}
	ErrFormat           = &Error{Status: StatusFormat}
	ErrUnsupported      = &Error{Status: StatusUnsupported}
	ErrCancelled        = &Error{Status: StatusCancelled}
	ErrInternal         = &Error{Status: StatusInternal}
	ErrNotFound         = &Error{Status: StatusNotFound}
	ErrAlreadyExists    = &Error{Status: StatusAlreadyExists}
	ErrVerification     = &Error{Status: StatusVerification}
	ErrLimitExceeded    = &Error{Status: StatusLimitExceeded}
	ErrPermissionDenied = &Error{Status: StatusPermissionDenied}
)

// takeError turns a call's status and error object into a Go error (nil on CFS_OK), freeing the
// error object.
func takeError(status C.cfs_status, cerr *C.cfs_error) error {
	if cerr != nil {
		defer C.cfs_error_free(cerr)
	}
	if status == C.CFS_OK {
		return nil
	}
	if cerr == nil {
		return &Error{Status: Status(status)}
	}
	return &Error{
		Status:  Status(C.cfs_error_status(cerr)),
		Message: C.GoString(C.cfs_error_message(cerr)),
		Errno:   syscall.Errno(C.cfs_error_os_error(cerr)),
	}
}

// errClosed is returned by methods of an object after Close.
func errClosed(what string) error {
	return &Error{Status: StatusInvalidArgument, Message: "composefs: use of a closed " + what}
}
