package composefs

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

func TestVersion(t *testing.T) {
	if got := Version(); got != HeaderVersion {
		t.Fatalf("Version() = %q, header says %q", got, HeaderVersion)
	}
	if n := strings.Count(Version(), "."); n < 2 {
		t.Fatalf("Version() = %q, want MAJOR.MINOR.PATCH", Version())
	}
}

func TestABIVersion(t *testing.T) {
	if ABIVersion() != 0 || HeaderABIVersion != 0 {
		t.Fatalf("ABIVersion() = %d, HeaderABIVersion = %d, want 0", ABIVersion(), HeaderABIVersion)
	}
}

func TestStatusNumbersAndNames(t *testing.T) {
	// Fixed by the C ABI: a renumbering is a break.
	want := map[Status]string{
		0: "CFS_OK", 1: "CFS_STATUS_INVALID_ARGUMENT", 2: "CFS_STATUS_NULL_ARGUMENT", 3: "CFS_STATUS_IO",
		4: "CFS_STATUS_FORMAT", 5: "CFS_STATUS_UNSUPPORTED", 6: "CFS_STATUS_CANCELLED",
		7: "CFS_STATUS_INTERNAL", 8: "CFS_STATUS_NOT_FOUND", 9: "CFS_STATUS_ALREADY_EXISTS",
		10: "CFS_STATUS_VERIFICATION", 11: "CFS_STATUS_LIMIT_EXCEEDED", 12: "CFS_STATUS_PERMISSION_DENIED",
		999: "CFS_STATUS_UNKNOWN",
	}
	for s, name := range want {
		if s.String() != name {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), s.String(), name)
		}
	}
	if StatusFormat != 4 || StatusNotFound != 8 || StatusPermissionDenied != 12 {
		t.Errorf("status constants do not match the C ABI numbers")
	}
}

func TestErrorsIs(t *testing.T) {
	err := fmt.Errorf("loading: %w", &Error{Status: StatusFormat, Message: "storage.conf:3: bad"})
	if !errors.Is(err, ErrFormat) {
		t.Errorf("errors.Is(%v, ErrFormat) = false", err)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrIO) {
		t.Errorf("a format error matches another status")
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusFormat || e.Message != "storage.conf:3: bad" {
		t.Errorf("errors.As did not give back the *Error: %#v", e)
	}
	if err.Error() != "loading: storage.conf:3: bad" {
		t.Errorf("Error() = %q", err.Error())
	}
	io := &Error{Status: StatusIO, Message: "open x: no such file", Errno: syscall.ENOENT}
	if !errors.Is(io, ErrIO) || !errors.Is(io, fs.ErrNotExist) || !errors.Is(io, syscall.ENOENT) {
		t.Errorf("an I/O error with ENOENT should match ErrIO, fs.ErrNotExist and ENOENT")
	}
	if ErrFormat.Error() != "composefs-storage: CFS_STATUS_FORMAT" {
		t.Errorf("ErrFormat.Error() = %q", ErrFormat.Error())
	}
}
