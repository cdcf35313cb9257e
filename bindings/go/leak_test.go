package composefs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list /proc/self/fd: %v", err)
	}
	return len(ents)
}

// Pipes, goroutines and C handles of every call are released, on success and on every error
// path: many rounds leave no file descriptor and no goroutine behind.
func TestNoLeaks(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tarBytes, err := os.ReadFile(c.path(".tar"))
	if err != nil {
		t.Fatal(err)
	}
	blob := newBlobServer(t, c.path(".zstd-chunked"))
	dump := "/ 0 40755 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n"
	tmp := t.TempDir()
	round := func(i int) {
		var image bytes.Buffer
		WriteImage(&image, strings.NewReader(dump), nil)
		WriteImage(failingWriter{errBroken}, strings.NewReader(dump), nil)
		WriteImage(io.Discard, &failingReader{data: []byte(dump), err: errBroken}, nil)
		WriteImage(io.Discard, strings.NewReader("garbage"), nil)
		ImageToDump(io.Discard, bytes.NewReader(image.Bytes()))
		FsverityDigest(strings.NewReader("abc"))
		GenerateDump(io.Discard, []byte(`{"version":1,"entries":[]}`), nil)
		dir := filepath.Join(tmp, "l")
		if res, err := ConvertLayer(context.Background(), bytes.NewReader(tarBytes), dir, nil); err == nil {
			res.TOC()
			res.Close()
		}
		ConvertLayer(context.Background(), bytes.NewReader(tarBytes), dir, nil) // exists
		os.RemoveAll(dir)
		ConvertLayer(context.Background(), &failingReader{data: tarBytes[:2048], err: errBroken}, dir, nil)
		ctx, cancel := context.WithCancel(context.Background())
		ConvertLayer(ctx, bytes.NewReader(tarBytes), dir, &ConvertOptions{Progress: func(Progress) { cancel() }})
		cancel()
		if res, err := PullLayer(context.Background(), blob.fetch, blob.size, dir, &PullOptions{Verity: VerityOff}); err == nil {
			res.Info()
			res.Close()
		}
		os.RemoveAll(dir)
		PullLayer(context.Background(), blob.fetch, blob.size-1, dir, nil)
	}
	round(0) // warm up (lazy fds of the runtime and the library)
	runtime.GC()
	fds, goroutines := openFds(t), runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		round(i)
	}
	runtime.GC()
	if got := openFds(t); got != fds {
		t.Errorf("open file descriptors: %d before, %d after", fds, got)
	}
	if got := runtime.NumGoroutine(); got > goroutines {
		t.Errorf("goroutines: %d before, %d after", goroutines, got)
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}
