package composefs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// layerCase is a corpus layer with its expectations.
type layerCase struct {
	name    string
	dir     string
	diffID  string
	objects []string // "ab/cdef..." object paths, sorted
}

func corpusLayer(t testing.TB, name string) layerCase {
	t.Helper()
	dir := filepath.Join(corpusDir(t), "cstorage", name)
	var compress struct {
		DiffID string `json:"diffID"`
	}
	b, err := os.ReadFile(filepath.Join(dir, name+".compress.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &compress); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, name+".objects.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var objects []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 {
			objects = append(objects, fields[0])
		}
	}
	return layerCase{name: name, dir: dir, diffID: compress.DiffID, objects: objects}
}

func (c layerCase) path(ext string) string { return filepath.Join(c.dir, c.name+ext) }

// listObjects lists the flat objects of a layer directory, sorted.
func listObjects(t testing.TB, layerDir string) []string {
	t.Helper()
	var objects []string
	root := filepath.Join(layerDir, "diff")
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			objects = append(objects, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(objects)
	return objects
}

// checkLayer checks a conversion's result and directory against the corpus.
func checkLayer(t testing.TB, c layerCase, res *ConvertResult, layerDir string) {
	t.Helper()
	diffID, err := res.DiffID()
	if err != nil || diffID != c.diffID {
		t.Errorf("%s: DiffID = %q, %v; want %q", c.name, diffID, err, c.diffID)
	}
	if got := listObjects(t, layerDir); strings.Join(got, "\n") != strings.Join(c.objects, "\n") {
		t.Errorf("%s: objects\n%v\nwant\n%v", c.name, got, c.objects)
	}
	stats, err := res.Stats()
	if err != nil || stats.Objects != uint64(len(c.objects)) {
		t.Errorf("%s: Stats = %+v, %v; want %d objects", c.name, stats, err, len(c.objects))
	}
	if _, err := os.Stat(filepath.Join(layerDir, "composefs-data", "composefs.blob")); err != nil {
		t.Errorf("%s: no blob: %v", c.name, err)
	}
}

func TestConvertLayerCorpus(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	ctx := context.Background()
	off := &ConvertOptions{Verity: VerityOff}
	for i, input := range []string{".tar", ".tar.gz", ".tar.zst", ".zstd-chunked"} {
		// From a path, from an *os.File, from a plain reader (a pipe).
		dir := filepath.Join(tmp, fmt.Sprintf("path%d", i))
		res, err := ConvertLayerFile(ctx, c.path(input), dir, off)
		if err != nil {
			t.Fatalf("%s: %v", input, err)
		}
		checkLayer(t, c, res, dir)
		res.Close()

		f, err := os.Open(c.path(input))
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(tmp, fmt.Sprintf("file%d", i))
		res, err = ConvertLayer(ctx, f, dir, off)
		if err != nil {
			t.Fatalf("%s: %v", input, err)
		}
		checkLayer(t, c, res, dir)
		res.Close()

		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(tmp, fmt.Sprintf("reader%d", i))
		res, err = ConvertLayer(ctx, bufio.NewReader(f), dir, nil)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", input, err)
		}
		checkLayer(t, c, res, dir)
		digest, err := res.CompressedDigest()
		if want := "sha256:" + sha256File(t, c.path(input)); err != nil || digest != want {
			t.Errorf("%s: CompressedDigest = %q, %v; want %q", input, digest, err, want)
		}
		res.Close()
	}
}

func TestConvertResultGetters(t *testing.T) {
	c := corpusLayer(t, "handmade-archive")
	dir := filepath.Join(t.TempDir(), "layer")
	var calls, lastEntries uint64
	res, err := ConvertLayerFile(context.Background(), c.path(".tar.zst"), dir, &ConvertOptions{
		Verity:   VerityOff,
		Progress: func(p Progress) { calls++; lastEntries = p.Entries },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	checkLayer(t, c, res, dir)
	stats, _ := res.Stats()
	if calls == 0 || lastEntries != stats.Entries {
		t.Errorf("progress: %d calls, last %d entries; the layer has %d", calls, lastEntries, stats.Entries)
	}
	if stats.UncompressedSize == 0 || stats.CompressedSize != uint64(fileSize(t, c.path(".tar.zst"))) {
		t.Errorf("sizes: %+v", stats)
	}
	n, err := res.Uint64("entries")
	if err != nil || n != stats.Entries {
		t.Errorf("Uint64(entries) = %d, %v", n, err)
	}
	_, err = res.Uint64("no-such-field")
	mustBe(t, err, ErrInvalidArgument, "Uint64(unknown)")
	_, err = res.Uint64("a\x00b")
	mustBe(t, err, ErrInvalidArgument, "Uint64(NUL)")
	js, err := res.JSON()
	var m map[string]any
	if err != nil || json.Unmarshal([]byte(js), &m) != nil {
		t.Errorf("JSON() = %q, %v", js, err)
	}
	toc, err := res.TOC()
	if err != nil || !bytes.HasPrefix(toc, []byte(`{"version":1,"entries":[`)) {
		t.Errorf("TOC() = %.40q, %v", toc, err)
	}
	ts, err := res.TarSplit()
	if err != nil || len(ts) < 2 || ts[0] != 0x1f || ts[1] != 0x8b {
		t.Errorf("TarSplit() is not gzip: %.8x, %v", ts, err)
	}
	// Closed: every method fails cleanly, Close stays a no-op.
	res.Close()
	res.Close()
	if _, err := res.DiffID(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("DiffID after Close: %v", err)
	}
	if _, err := res.TOC(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("TOC after Close: %v", err)
	}
}

func fileSize(t testing.TB, p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Objects of a source layer are reused, and KeepWhiteoutFiles changes the tree.
func TestConvertSourceLayersAndOptions(t *testing.T) {
	c := corpusLayer(t, "handmade-archive")
	tmp := t.TempDir()
	ctx := context.Background()
	first := filepath.Join(tmp, "first")
	res, err := ConvertLayerFile(ctx, c.path(".tar.zst"), first, &ConvertOptions{Verity: VerityOff})
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	second := filepath.Join(tmp, "second")
	// Nine sources with caches (the same layer nine times): more than are probed one by one, so
	// an index over them is kept in IndexDir.
	sources := []string{first, first, first, first, first, first, first, first, first}
	index := filepath.Join(tmp, "index")
	res, err = ConvertLayerFile(ctx, c.path(".tar.zst"), second, &ConvertOptions{
		SourceLayers: sources, IndexDir: index, Hardlinks: true, Verity: VerityOff, KeepWhiteoutFiles: true,
		MaxEntries: 100000,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if _, err := os.Stat(filepath.Join(index, "objects.index")); err != nil {
		t.Errorf("no index kept in IndexDir: %v", err)
	}
	stats, _ := res.Stats()
	if stats.ObjectsReused == 0 || stats.BytesReused == 0 {
		t.Errorf("no reuse from the source layer: %+v", stats)
	}
	// Hardlinks: an object of the second layer is the inode of the first's.
	obj := c.objects[len(c.objects)-1]
	a, _ := os.Stat(filepath.Join(first, "diff", obj))
	b, _ := os.Stat(filepath.Join(second, "diff", obj))
	if !os.SameFile(a, b) {
		t.Errorf("%s was not hardlinked from the source layer", obj)
	}
	// Different whiteout handling gives a different blob.
	if sha256File(t, filepath.Join(first, "composefs-data", "composefs.blob")) ==
		sha256File(t, filepath.Join(second, "composefs-data", "composefs.blob")) {
		t.Error("KeepWhiteoutFiles did not change the blob of a layer with whiteouts")
	}
}

func TestConvertErrors(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	ctx := context.Background()
	dir := filepath.Join(tmp, "layer")

	_, err := ConvertLayerFile(ctx, filepath.Join(tmp, "missing.tar"), dir, nil)
	mustBe(t, err, ErrNotFound, "missing input")
	_, err = ConvertLayer(ctx, strings.NewReader("not a tar, nor compressed"), dir, nil)
	mustBe(t, err, ErrFormat, "garbage input")
	_, err = ConvertLayerFile(ctx, c.path(".tar"), dir, &ConvertOptions{Verity: "sometimes"})
	mustBe(t, err, ErrInvalidArgument, "bad verity policy")
	_, err = ConvertLayerFile(ctx, c.path(".tar"), dir, &ConvertOptions{MaxEntries: 2})
	mustBe(t, err, ErrLimitExceeded, "too many entries")
	_, err = ConvertLayerFile(ctx, c.path(".tar"), dir, &ConvertOptions{SourceLayers: []string{"a\x00b"}})
	mustBe(t, err, ErrInvalidArgument, "NUL in a source layer")
	_, err = ConvertLayerFile(ctx, c.path(".tar"), "a\x00b", nil)
	mustBe(t, err, ErrInvalidArgument, "NUL in the layer dir")
	// A reader that fails half-way: its error, and nothing on disk.
	tarBytes, _ := os.ReadFile(c.path(".tar"))
	_, err = ConvertLayer(ctx, &failingReader{data: tarBytes[:3000], err: errBroken}, dir, nil)
	if !errors.Is(err, errBroken) {
		t.Errorf("failing reader: %v", err)
	}
	// ... also when the part read is a complete tar (the library would have succeeded).
	_, err = ConvertLayer(ctx, &failingReader{data: tarBytes, err: errBroken}, dir, nil)
	if !errors.Is(err, errBroken) {
		t.Errorf("failing reader after a complete tar: %v", err)
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Fatalf("left behind after errors: %v", names)
	}
	// An existing layer dir is refused and kept.
	res, err := ConvertLayerFile(ctx, c.path(".tar"), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	_, err = ConvertLayerFile(ctx, c.path(".tar"), dir, nil)
	mustBe(t, err, ErrAlreadyExists, "existing layer dir")
	if _, err := os.Stat(filepath.Join(dir, "composefs-data", "composefs.blob")); err != nil {
		t.Errorf("the existing layer was damaged: %v", err)
	}
}

func TestConvertCancel(t *testing.T) {
	c := corpusLayer(t, "etc-doc-gnu")
	tmp := t.TempDir()

	// Cancelled before the start.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ConvertLayerFile(ctx, c.path(".tar.zst"), filepath.Join(tmp, "a"), nil)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}

	// Cancelled from the progress callback after 10 entries: the library stops.
	for _, how := range []string{"path", "file", "reader"} {
		ctx, cancel := context.WithCancel(context.Background())
		var entries uint64
		opts := &ConvertOptions{Progress: func(p Progress) {
			entries = p.Entries
			if p.Entries >= 10 {
				cancel()
			}
		}}
		dir := filepath.Join(tmp, how)
		switch how {
		case "path":
			_, err = ConvertLayerFile(ctx, c.path(".tar.zst"), dir, opts)
		case "file", "reader":
			f, ferr := os.Open(c.path(".tar.zst"))
			if ferr != nil {
				t.Fatal(ferr)
			}
			var r io.Reader = f
			if how == "reader" {
				r = bufio.NewReader(f)
			}
			_, err = ConvertLayer(ctx, r, dir, opts)
			f.Close()
		}
		cancel()
		if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled conversion: %v", how, err)
		}
		if entries != 10 {
			t.Errorf("%s: the conversion went on to entry %d after the cancel at 10", how, entries)
		}
	}

	// A reader that stalls: cancelling ends the pipe, and the cut input leaves nothing.
	ctx, cancel = context.WithCancel(context.Background())
	tarBytes, _ := os.ReadFile(corpusLayer(t, "noparents-ustar").path(".tar"))
	stall := make(chan struct{})
	r := io.MultiReader(bytes.NewReader(tarBytes[:5120]), readerFunc(func(p []byte) (int, error) {
		cancel()
		<-stall
		return 0, io.EOF
	}))
	go func() { <-ctx.Done(); close(stall) }()
	_, err = ConvertLayer(ctx, r, filepath.Join(tmp, "stalled"), nil)
	if !errors.Is(err, ErrCancelled) {
		t.Errorf("stalled reader: %v", err)
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Errorf("left behind after cancels: %v", names)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// A panic in the progress callback does not unwind through the library: it cancels the
// conversion (nothing left on disk) and is raised again in the caller.
func TestConvertProgressPanic(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recovered %v, want boom", p)
		}
		if names := dirEntries(t, tmp); len(names) != 0 {
			t.Errorf("left behind: %v", names)
		}
	}()
	ConvertLayerFile(context.Background(), c.path(".tar"), filepath.Join(tmp, "l"), &ConvertOptions{
		Progress: func(Progress) { panic("boom") },
	})
	t.Error("no panic")
}

func TestConvertConcurrent(t *testing.T) {
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	var wg sync.WaitGroup
	var failures atomic.Int32
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var progress atomic.Uint64
			opts := &ConvertOptions{Verity: VerityOff, Progress: func(p Progress) { progress.Store(p.Entries) }}
			dir := filepath.Join(tmp, fmt.Sprint(g))
			var res *ConvertResult
			var err error
			if g%2 == 0 {
				res, err = ConvertLayerFile(ctx, c.path(".tar.zst"), dir, opts)
			} else {
				f, ferr := os.ReadFile(c.path(".tar.gz"))
				if ferr != nil {
					t.Error(ferr)
					return
				}
				res, err = ConvertLayer(ctx, bytes.NewReader(f), dir, opts)
			}
			if err != nil {
				t.Errorf("goroutine %d: %v", g, err)
				failures.Add(1)
				return
			}
			// The result's methods from several goroutines, racing with Close.
			var inner sync.WaitGroup
			for k := 0; k < 4; k++ {
				inner.Add(1)
				go func() {
					defer inner.Done()
					if id, err := res.DiffID(); err == nil && id != c.diffID {
						t.Errorf("DiffID %s", id)
					}
					res.TOC()
					res.Stats()
				}()
			}
			inner.Wait()
			go res.Close()
			res.Close()
			if progress.Load() == 0 {
				t.Errorf("goroutine %d: no progress", g)
			}
		}(g)
	}
	wg.Wait()
	if failures.Load() == 0 && len(dirEntries(t, tmp)) != 16 {
		t.Errorf("layers: %v", dirEntries(t, tmp))
	}
}

// Without metadata files the layer dir holds objects and the blob only, and the result still
// gives the TOC and the tar-split (uncompressed, as containers/storage keeps it until it stores
// the layer): the same bytes as the gzip form, adding up to the tar's size.
func TestConvertLayerNoMetadata(t *testing.T) {
	c := corpusLayer(t, "handmade-pax")
	dir := filepath.Join(t.TempDir(), "layer")
	res, err := ConvertLayerFile(context.Background(), c.path(".tar.zst"), dir, &ConvertOptions{Verity: VerityOff, NoMetadata: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if got := dirEntries(t, filepath.Join(dir, "composefs-data")); fmt.Sprint(got) != "[composefs.blob]" {
		t.Errorf("composefs-data holds %v", got)
	}
	toc, err := res.TOC()
	var parsed struct {
		Entries []struct {
			Name string `json:"name"`
		} `json:"entries"`
	}
	if err != nil || json.Unmarshal(toc, &parsed) != nil || len(parsed.Entries) == 0 {
		t.Errorf("TOC() = %.100q (%v)", toc, err)
	}
	f, err := os.CreateTemp(t.TempDir(), "tar-split")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("x"); err != nil { // written from the current offset
		t.Fatal(err)
	}
	if err := res.WriteTarSplit(f); err != nil {
		t.Fatal(err)
	}
	written, _ := os.ReadFile(f.Name())
	gz, err := res.TarSplit()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(written, append([]byte("x"), plain...)) {
		t.Fatalf("WriteTarSplit wrote %d bytes, the gzip form holds %d (%v)", len(written)-1, len(plain), err)
	}
	if _, err := f.Seek(1, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	size, _ := res.Uint64("uncompressed_size")
	if got := tarSizeOf(t, f); uint64(got) != size {
		t.Errorf("the tar-split adds up to %d bytes, the tar has %d", got, size)
	}
	res.Close()
	if err := res.WriteTarSplit(f); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("WriteTarSplit after Close: %v", err)
	}
}
