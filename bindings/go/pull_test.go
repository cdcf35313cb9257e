package composefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
)

// blobServer serves ranges of a zstd:chunked blob as a registry would, counting what it is asked.
type blobServer struct {
	blob      *os.File
	size      uint64
	maxRanges int          // refuse more ranges than this with ErrTooManyRanges (0: no limit)
	refusals  atomic.Int32 // requests refused
	requests  atomic.Int32 // requests served
	bytes     atomic.Int64 // bytes served
}

func newBlobServer(t testing.TB, path string) *blobServer {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	return &blobServer{blob: f, size: uint64(st.Size())}
}

// closeCounter counts Close calls of the readers handed out.
type closeCounter struct {
	io.Reader
	closed *atomic.Int32
}

func (c closeCounter) Close() error { c.closed.Add(1); return nil }

func (s *blobServer) fetch(ctx context.Context, chunks []Chunk) (io.Reader, error) {
	if s.maxRanges > 0 && len(chunks) > s.maxRanges {
		s.refusals.Add(1)
		return nil, fmt.Errorf("400 Bad Request: %w", ErrTooManyRanges)
	}
	s.requests.Add(1)
	readers := make([]io.Reader, len(chunks))
	for i, c := range chunks {
		readers[i] = io.NewSectionReader(s.blob, int64(c.Offset), int64(c.Length))
		s.bytes.Add(int64(c.Length))
	}
	return io.MultiReader(readers...), nil
}

func TestPullLayer(t *testing.T) {
	for _, name := range []string{"noparents-ustar", "handmade-archive", "handmade-pax"} {
		c := corpusLayer(t, name)
		tmp := t.TempDir()
		srv := newBlobServer(t, c.path(".zstd-chunked"))
		annotations := readJSONMap(t, c.path(".annotations.json"))
		var progressCalls int
		dir := filepath.Join(tmp, "layer")
		res, err := PullLayer(context.Background(), srv.fetch, srv.size, dir, &PullOptions{
			Annotations: annotations, Verity: VerityOff, ExpectedDiffID: c.diffID,
			Progress: func(Progress) { progressCalls++ },
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		info, err := res.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.DiffID != c.diffID || !info.TOCAuthenticated || info.BlobSize != srv.size || info.Objects != uint64(len(c.objects)) {
			t.Errorf("%s: info %+v", name, info)
		}
		if got := listObjects(t, dir); fmt.Sprint(got) != fmt.Sprint(c.objects) {
			t.Errorf("%s: objects %v, want %v", name, got, c.objects)
		}
		if int64(info.BlobBytesFetched) > srv.bytes.Load() || srv.requests.Load() == 0 || progressCalls == 0 {
			t.Errorf("%s: fetched %d bytes in %d requests (%d progress calls); the library says %d", name,
				srv.bytes.Load(), srv.requests.Load(), progressCalls, info.BlobBytesFetched)
		}
		toc, err := res.TOC()
		want, _ := os.ReadFile(c.path(".toc.raw.json"))
		if err != nil || !bytes.Equal(toc, want) {
			t.Errorf("%s: TOC() differs from the corpus TOC (%v)", name, err)
		}
		// The same layer as converting the whole blob: the same composefs blob.
		conv := filepath.Join(tmp, "converted")
		cres, err := ConvertLayerFile(context.Background(), c.path(".zstd-chunked"), conv, &ConvertOptions{Verity: VerityOff})
		if err != nil {
			t.Fatal(err)
		}
		cres.Close()
		if sha256File(t, filepath.Join(conv, "composefs-data", "composefs.blob")) != sha256File(t, filepath.Join(dir, "composefs-data", "composefs.blob")) {
			t.Errorf("%s: the pulled blob differs from the converted one", name)
		}
		js, err := res.JSON()
		if err != nil || !bytes.Contains([]byte(js), []byte(c.diffID)) {
			t.Errorf("%s: JSON() = %s, %v", name, js, err)
		}
		res.Close()
		res.Close()
		if _, err := res.Info(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Info after Close: %v", err)
		}
		if _, err := res.TOC(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("TOC after Close: %v", err)
		}
	}
}

// A source that refuses many ranges at once gets asked again with fewer; a pull with a source
// layer fetches only what the source lacks.
func TestPullLayerRangesAndSources(t *testing.T) {
	c := corpusLayer(t, "handmade-pax")
	tmp := t.TempDir()
	srv := newBlobServer(t, c.path(".zstd-chunked"))
	first := filepath.Join(tmp, "first")
	res, err := PullLayer(context.Background(), srv.fetch, srv.size, first, &PullOptions{Verity: VerityOff})
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	firstBytes := srv.bytes.Load()

	// A source layer with every other object by size, the largest first: the missing ones are
	// ranges with large gaps between (small gaps would make the whole span one range).
	partial := filepath.Join(tmp, "partial")
	bySize := append([]string(nil), c.objects...)
	size := func(obj string) int64 {
		st, err := os.Stat(filepath.Join(first, "diff", obj))
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	sort.SliceStable(bySize, func(i, j int) bool { return size(bySize[i]) > size(bySize[j]) })
	for i, obj := range bySize {
		if i%2 == 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(first, "diff", obj))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(partial, "diff", obj), string(b))
	}
	srv2 := newBlobServer(t, c.path(".zstd-chunked"))
	srv2.maxRanges = 1
	second := filepath.Join(tmp, "second")
	res, err = PullLayer(context.Background(), srv2.fetch, srv2.size, second, &PullOptions{
		SourceLayers: []string{partial}, Hardlinks: true, Verity: VerityOff, NoMetadata: true, MaxRanges: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	info, _ := res.Info()
	if info.ObjectsReused == 0 || srv2.bytes.Load() >= firstBytes {
		t.Errorf("second pull: %d objects reused, %d bytes fetched (first: %d)", info.ObjectsReused, srv2.bytes.Load(), firstBytes)
	}
	if srv2.refusals.Load() == 0 {
		t.Error("the source never refused: the test did not exercise asking for fewer ranges")
	}
	if got := listObjects(t, second); fmt.Sprint(got) != fmt.Sprint(c.objects) {
		t.Errorf("objects %v, want %v", got, c.objects)
	}
	// From a file on disk, keeping whiteout files.
	res2, err := PullLayerFile(context.Background(), c.path(".zstd-chunked"), filepath.Join(tmp, "file"), &PullOptions{Verity: VerityOff, KeepWhiteoutFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	info2, _ := res2.Info()
	res2.Close()
	if info2.DiffID != c.diffID {
		t.Errorf("PullLayerFile DiffID %s", info2.DiffID)
	}
	if sha256File(t, filepath.Join(first, "composefs-data", "composefs.blob")) == sha256File(t, filepath.Join(tmp, "file", "composefs-data", "composefs.blob")) {
		t.Error("KeepWhiteoutFiles did not change the blob of a layer with whiteouts")
	}
}

func TestPullLayerErrors(t *testing.T) {
	c := corpusLayer(t, "handmade-archive")
	tmp := t.TempDir()
	ctx := context.Background()
	dir := filepath.Join(tmp, "layer")
	srv := newBlobServer(t, c.path(".zstd-chunked"))

	_, err := PullLayer(ctx, nil, srv.size, dir, nil)
	mustBe(t, err, ErrNullArgument, "no fetcher")
	_, err = PullLayer(ctx, srv.fetch, srv.size, dir, &PullOptions{Verity: "sometimes"})
	mustBe(t, err, ErrInvalidArgument, "bad verity policy")
	_, err = PullLayer(ctx, srv.fetch, srv.size, dir, &PullOptions{MaxRanges: -1})
	mustBe(t, err, ErrInvalidArgument, "bad max ranges")
	_, err = PullLayer(ctx, srv.fetch, srv.size, dir, &PullOptions{ExpectedDiffID: "sha256:nope"})
	if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrFormat) {
		t.Errorf("bad expected DiffID: %v", err)
	}
	_, err = PullLayer(ctx, srv.fetch, srv.size, "a\x00b", nil)
	mustBe(t, err, ErrInvalidArgument, "NUL in the layer dir")

	// The wrong DiffID promised.
	_, err = PullLayer(ctx, srv.fetch, srv.size, dir, &PullOptions{Verity: VerityOff, ExpectedDiffID: "sha256:" + fmt.Sprintf("%064d", 0)})
	if err == nil {
		t.Error("a wrong expected DiffID was accepted")
	}
	// Not a zstd:chunked blob.
	plain := newBlobServer(t, c.path(".tar.zst"))
	_, err = PullLayer(ctx, plain.fetch, plain.size, dir, nil)
	mustBe(t, err, ErrFormat, "not zstd:chunked")

	// The fetcher fails: its error comes back, wrapped.
	errDown := errors.New("registry down")
	calls := 0
	failing := func(ctx context.Context, chunks []Chunk) (io.Reader, error) {
		calls++
		if calls > 2 { // after the footer and the TOC
			return nil, errDown
		}
		return srv.fetch(ctx, chunks)
	}
	_, err = PullLayer(ctx, failing, srv.size, dir, nil)
	if !errors.Is(err, errDown) || !errors.Is(err, ErrIO) {
		t.Errorf("failing fetcher: %v, want errDown and ErrIO", err)
	}
	// Its reader fails half-way.
	var closed atomic.Int32
	badReader := func(ctx context.Context, chunks []Chunk) (io.Reader, error) {
		r, _ := srv.fetch(ctx, chunks)
		if len(chunks) > 1 || chunks[0].Length > 1000 {
			r = io.MultiReader(io.LimitReader(r, 10), &failingReader{err: errBroken})
		}
		return closeCounter{r, &closed}, nil
	}
	_, err = PullLayer(ctx, badReader, srv.size, dir, &PullOptions{Verity: VerityOff})
	if !errors.Is(err, errBroken) {
		t.Errorf("failing reader: %v", err)
	}
	if closed.Load() == 0 {
		t.Error("the fetched readers were not closed")
	}
	// The whole blob size is wrong: the footer is not where it should be.
	_, err = PullLayer(ctx, srv.fetch, srv.size-1, dir, nil)
	if err == nil {
		t.Error("a wrong blob size was accepted")
	}
	_, err = PullLayerFile(ctx, filepath.Join(tmp, "missing"), dir, nil)
	mustBe(t, err, ErrNotFound, "PullLayerFile(missing)")
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

func TestPullLayerCancel(t *testing.T) {
	c := corpusLayer(t, "handmade-pax")
	tmp := t.TempDir()
	srv := newBlobServer(t, c.path(".zstd-chunked"))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := PullLayer(ctx, srv.fetch, srv.size, filepath.Join(tmp, "a"), nil)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before: %v", err)
	}
	_, err = PullLayerFile(ctx, c.path(".zstd-chunked"), filepath.Join(tmp, "a"), nil)
	if !errors.Is(err, ErrCancelled) {
		t.Errorf("PullLayerFile cancelled before: %v", err)
	}

	// Cancelled inside the fetcher (as a dropped connection would be), from the progress
	// callback, and while a reader is being read.
	for _, how := range []string{"fetch", "progress", "read", "file-progress"} {
		ctx, cancel := context.WithCancel(context.Background())
		fetches := 0
		fetch := func(ctx context.Context, chunks []Chunk) (io.Reader, error) {
			fetches++
			if how == "fetch" && fetches == 3 {
				cancel()
				return nil, ctx.Err()
			}
			r, err := srv.fetch(ctx, chunks)
			if how == "read" && fetches == 3 {
				r = io.MultiReader(io.LimitReader(r, 1), readerFunc(func([]byte) (int, error) { cancel(); return 0, ctx.Err() }))
			}
			return r, err
		}
		opts := &PullOptions{Verity: VerityOff, Progress: func(p Progress) {
			if how == "progress" || how == "file-progress" {
				cancel()
			}
		}}
		dir := filepath.Join(tmp, how)
		if how == "file-progress" {
			_, err = PullLayerFile(ctx, c.path(".zstd-chunked"), dir, opts)
		} else {
			_, err = PullLayer(ctx, fetch, srv.size, dir, opts)
		}
		cancel()
		if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want ErrCancelled", how, err)
		}
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Errorf("left behind after cancels: %v", names)
	}
}

func TestPullLayerFetcherPanic(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	srv := newBlobServer(t, c.path(".zstd-chunked"))
	defer func() {
		if p := recover(); p != "fetch boom" {
			t.Errorf("recovered %v", p)
		}
		if names := dirEntries(t, tmp); len(names) != 0 {
			t.Errorf("left behind: %v", names)
		}
	}()
	n := 0
	PullLayer(context.Background(), func(ctx context.Context, chunks []Chunk) (io.Reader, error) {
		if n++; n == 2 {
			panic("fetch boom")
		}
		return srv.fetch(ctx, chunks)
	}, srv.size, filepath.Join(tmp, "l"), nil)
	t.Error("no panic")
}

func TestPullLayerConcurrent(t *testing.T) {
	c := corpusLayer(t, "handmade-archive")
	tmp := t.TempDir()
	var wg sync.WaitGroup
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			srv := newBlobServer(t, c.path(".zstd-chunked"))
			srv.maxRanges = 1 + g%4
			res, err := PullLayer(context.Background(), srv.fetch, srv.size, filepath.Join(tmp, fmt.Sprint(g)), &PullOptions{Verity: VerityOff})
			if err != nil {
				t.Errorf("goroutine %d: %v", g, err)
				return
			}
			var inner sync.WaitGroup
			for k := 0; k < 3; k++ {
				inner.Add(1)
				go func() {
					defer inner.Done()
					if info, err := res.Info(); err == nil && info.DiffID != c.diffID {
						t.Errorf("DiffID %s", info.DiffID)
					}
					res.TOC()
				}()
			}
			go res.Close()
			inner.Wait()
			res.Close()
		}(g)
	}
	wg.Wait()
}

// ConcatStreams reads what containers/image's GetBlobAt returns.
func TestConcatStreams(t *testing.T) {
	var closed atomic.Int32
	mk := func(parts []string, err error) io.ReadCloser {
		streams := make(chan io.ReadCloser)
		errs := make(chan error)
		go func() {
			defer close(streams)
			defer close(errs)
			for _, p := range parts {
				streams <- closeCounter{bytes.NewReader([]byte(p)), &closed}
			}
			if err != nil {
				errs <- err
			}
		}()
		return ConcatStreams(streams, errs)
	}
	r := mk([]string{"ab", "", "cde", "f"}, nil)
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "abcdef" {
		t.Errorf("ReadAll = %q, %v", b, err)
	}
	r.Close()
	if closed.Load() != 4 {
		t.Errorf("%d readers closed, want 4", closed.Load())
	}
	_, err = io.ReadAll(mk([]string{"ab"}, errBroken))
	if !errors.Is(err, errBroken) {
		t.Errorf("error on errs: %v", err)
	}
	// Closed early: the rest is drained and closed.
	closed.Store(0)
	r = mk([]string{"a", "b", "c"}, nil)
	r.Read(make([]byte, 1))
	r.Close()
	if closed.Load() != 3 {
		t.Errorf("%d readers closed after an early Close, want 3", closed.Load())
	}
}
