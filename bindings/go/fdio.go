package composefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// The C API reads and writes file descriptors. An *os.File is passed as is; any other
// io.Reader or io.Writer goes through a pipe that a goroutine feeds or drains while the C call
// runs on the calling goroutine.

// inputFd is a file descriptor to read from during one C call.
type inputFd struct {
	file *os.File      // the caller's file, or the read end of our pipe
	pipe *os.File      // the write end of our pipe (nil for a caller's file)
	done chan struct{} // closed when the feeding goroutine returned
	err  error         // the feeding goroutine's error, valid after done

	mu  sync.Mutex
	fed bool // the reader reached its end and the pipe was closed after it
	cut bool // stop closed the pipe before the reader's end: the C side saw a short input
}

// newInputFd returns a descriptor that yields r's bytes. Call fd() for the C call, then finish.
func newInputFd(r io.Reader) (*inputFd, error) {
	if f, ok := r.(*os.File); ok && f != nil {
		return &inputFd{file: f}, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, &Error{Status: StatusIO, Message: "composefs: creating a pipe: " + err.Error()}
	}
	in := &inputFd{file: pr, pipe: pw, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		rr := &recordingReader{r: r}
		_, err := io.Copy(pw, rr) // a write error is the C side having stopped reading: its error says why
		in.mu.Lock()
		in.fed = err == nil
		in.mu.Unlock()
		pw.Close()
		in.err = rr.err
	}()
	return in, nil
}

// fd is the descriptor to pass to C; it stays valid until finish.
func (in *inputFd) fd() int {
	return int(in.file.Fd())
}

// stop ends the feeding early: the C side then sees the end of the input.
func (in *inputFd) stop() {
	if in.pipe == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.fed {
		in.cut = true
		in.pipe.Close()
	}
}

// wasCut says whether stop cut the input short.
func (in *inputFd) wasCut() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cut
}

// finish releases the pipe after the C call returned and reports the reader's error (not
// io.EOF). It waits for the reader's last Read to return.
func (in *inputFd) finish() error {
	if in.pipe == nil {
		return nil
	}
	in.file.Close() // a feeder blocked on a full pipe now fails with EPIPE
	<-in.done
	if in.err != nil {
		return ioError("reading the input", in.err)
	}
	return nil
}

// recordingReader keeps the first error of r other than io.EOF.
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}

// outputFd is a file descriptor to write to during one C call.
type outputFd struct {
	file *os.File      // the caller's file, or the write end of our pipe
	pipe *os.File      // the read end of our pipe (nil for a caller's file)
	done chan struct{} // closed when the draining goroutine returned
	err  error         // the writer's error, valid after done
}

func newOutputFd(w io.Writer) (*outputFd, error) {
	if f, ok := w.(*os.File); ok && f != nil {
		return &outputFd{file: f}, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, &Error{Status: StatusIO, Message: "composefs: creating a pipe: " + err.Error()}
	}
	out := &outputFd{file: pw, pipe: pr, done: make(chan struct{})}
	go func() {
		defer close(out.done)
		_, out.err = io.Copy(w, pr)
		// On a writer error, closing the read end makes the C side's next write fail (EPIPE)
		// instead of blocking on a pipe nobody reads.
		pr.Close()
	}()
	return out, nil
}

func (out *outputFd) fd() int {
	return int(out.file.Fd())
}

// finish closes our pipe after the C call returned, waits for everything to reach the writer,
// and reports the writer's error.
func (out *outputFd) finish() error {
	if out.pipe == nil {
		return nil
	}
	out.file.Close()
	<-out.done
	if out.err != nil {
		return ioError("writing the output", out.err)
	}
	return nil
}

// ioError is an error of a Go-side I/O step, with the status the library gives the same OS
// error (ErrNotFound for a missing file, ...); it wraps err, so errors.Is(err, fs.ErrNotExist)
// and the like work too.
func ioError(context string, err error) error {
	status := StatusIO
	switch {
	case errors.Is(err, fs.ErrNotExist):
		status = StatusNotFound
	case errors.Is(err, fs.ErrPermission):
		status = StatusPermissionDenied
	case errors.Is(err, fs.ErrExist):
		status = StatusAlreadyExists
	}
	return fmt.Errorf("%w: %w", &Error{Status: status, Message: "composefs: " + context}, err)
}

// firstError returns the first non-nil error: the caller lists causes before consequences (the
// caller's reader failing before the library's error about a truncated input).
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
