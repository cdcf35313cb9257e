package cstorage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	composefs "github.com/composefs-storage/composefs-storage/bindings/go"
)

func corpusDir(t testing.TB) string {
	t.Helper()
	for _, d := range []string{os.Getenv("CFS_CORPUS"), filepath.Join("..", "..", "..", "..", "shared", "corpus"), "/work/shared/corpus"} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "MANIFEST.txt")); err == nil {
			return d
		}
	}
	t.Skip("test corpus not found (set CFS_CORPUS or place it at ../shared/corpus next to the repository)")
	return ""
}

func TestRegularFilePathForValidatedDigest(t *testing.T) {
	hex := "4355a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865"
	p, err := RegularFilePathForValidatedDigest("sha256:" + hex)
	if err != nil || p != "43/55a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865" {
		t.Errorf("= %q, %v", p, err)
	}
	// A named string type, as go-digest's Digest.
	type digest string
	if p2, err := RegularFilePathForValidatedDigest(digest("sha256:" + hex)); err != nil || p2 != p {
		t.Errorf("named type: %q, %v", p2, err)
	}
	for _, bad := range []string{"", hex, "sha512:" + hex, "sha256:" + hex[:63], "sha256:../" + hex[3:], "sha256:" + strings.ToUpper(hex)} {
		_, err := RegularFilePathForValidatedDigest(bad)
		if !errors.Is(err, composefs.ErrInvalidArgument) {
			t.Errorf("%q: %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestVerity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Before enabling: the kernel has nothing to measure.
	if _, err := MeasureVerity("f", int(f.Fd())); err == nil {
		t.Fatal("MeasureVerity of a file without fs-verity succeeded")
	}
	err = EnableVerity("f", int(f.Fd()))
	if IsVerityUnsupported(err) {
		t.Skipf("no fs-verity on %s: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := MeasureVerity("f", int(f.Fd()))
	want, _ := composefs.FsverityDigestFile(path)
	if err != nil || got != want.String() {
		t.Errorf("MeasureVerity = %q, %v; want %s", got, err, want)
	}
	// Enabling twice is no error.
	if err := EnableVerity("f", int(f.Fd())); err != nil {
		t.Errorf("second EnableVerity: %v", err)
	}
}

func TestVerityErrors(t *testing.T) {
	err := EnableVerity("bad fd", -1)
	if !errors.Is(err, syscall.EBADF) || !strings.Contains(err.Error(), `"bad fd"`) {
		t.Errorf("EnableVerity(-1) = %v", err)
	}
	if _, err := MeasureVerity("bad fd", -1); !errors.Is(err, syscall.EBADF) {
		t.Errorf("MeasureVerity(-1) = %v", err)
	}
	if !IsVerityUnsupported(syscall.ENOTTY) || IsVerityUnsupported(syscall.EBADF) {
		t.Error("IsVerityUnsupported")
	}
}

func needMount(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount tests need root (CAP_SYS_ADMIN)")
	}
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fss), "\terofs\n") || !strings.Contains(string(fss), "\toverlay\n") {
		t.Skip("the kernel has no erofs or overlay (see /proc/filesystems)")
	}
}

func TestMountComposefsBlob(t *testing.T) {
	tmp := t.TempDir()
	if err := MountComposefsBlob(tmp, tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no blob in %s: %v, want os.ErrNotExist", tmp, err)
	}
	if err := Unmount(tmp); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Unmount(not mounted): %v, want EINVAL", err)
	}
	bad := filepath.Join(tmp, "bad", "composefs-data")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(ComposefsBlobPath(bad), make([]byte, 4096), 0o644)
	if _, err := OpenComposefsMount(bad); !errors.Is(err, composefs.ErrFormat) {
		t.Errorf("a blob without the composefs magic: %v, want ErrFormat", err)
	}

	needMount(t)
	layer := filepath.Join(tmp, "layer")
	tarPath := filepath.Join(corpusDir(t), "cstorage", "noparents-ustar", "noparents-ustar.tar")
	res, err := composefs.ConvertLayerFile(context.Background(), tarPath, layer, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	dataDir := filepath.Join(layer, "composefs-data")
	// What containers/storage reads from the bare EROFS: the size, and the redirect to the object
	// that its overlay finds in the layer's diff dir (a data-only lower).
	check := func(root string) {
		t.Helper()
		st, err := os.Stat(filepath.Join(root, "opt/z/f2"))
		if err != nil || st.Size() != 2 {
			t.Errorf("stat opt/z/f2 in the EROFS: %v, %v", st, err)
			return
		}
		buf := make([]byte, 256)
		n, err := syscall.Getxattr(filepath.Join(root, "opt/z/f2"), "trusted.overlay.redirect", buf)
		if err != nil {
			t.Errorf("redirect of opt/z/f2: %v", err)
			return
		}
		obj := filepath.Join(layer, "diff", string(buf[:n]))
		if b, err := os.ReadFile(obj); err != nil || len(b) != 2 {
			t.Errorf("the redirect %q names no 2-byte object: %v", buf[:n], err)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			mnt := filepath.Join(tmp, "mnt", string(rune('a'+g)))
			os.MkdirAll(mnt, 0o755)
			if err := MountComposefsBlob(dataDir, mnt); err != nil {
				t.Error(err)
				return
			}
			check(mnt)
			if err := Unmount(mnt); err != nil {
				t.Error(err)
			}
		}(g)
	}
	wg.Wait()
	// Detached, read through /proc/self/fd as containers/storage's DiffGetter does.
	fd, err := OpenComposefsMount(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	check(fmt.Sprintf("/proc/self/fd/%d", fd))
	syscall.Close(fd)
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(info), tmp) {
		t.Errorf("still mounted under %s", tmp)
	}
}

func readCorpus(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGenerateDump(t *testing.T) {
	for _, name := range []string{"noparents-ustar", "handmade-archive", "handmade-pax", "empty"} {
		toc := readCorpus(t, "cstorage/"+name+"/"+name+".toc.raw.json")
		var verity map[string]string
		if err := json.Unmarshal(readCorpus(t, "cstorage/"+name+"/"+name+".verity.json"), &verity); err != nil {
			t.Fatal(err)
		}
		// The decoded TOC, as containers/storage holds it, and the raw JSON.
		var decoded any
		if err := json.Unmarshal(toc, &decoded); err != nil {
			t.Fatal(err)
		}
		for _, in := range []any{toc, string(toc), json.RawMessage(toc), decoded} {
			r, err := GenerateDump(in, nil)
			if err != nil {
				t.Fatalf("%s (%T): %v", name, in, err)
			}
			got, _ := io.ReadAll(r)
			if !bytes.Equal(got, readCorpus(t, "cstorage/"+name+"/"+name+".dump")) {
				t.Errorf("%s (%T): dump differs", name, in)
			}
		}
		r, err := GenerateDump(decoded, verity)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, readCorpus(t, "cstorage-images/"+name+".with-verity.dump")) {
			t.Errorf("%s: dump with verity differs", name)
		}
	}
	if _, err := GenerateDump(nil, nil); !errors.Is(err, composefs.ErrNullArgument) {
		t.Errorf("GenerateDump(nil) = %v", err)
	}
	if _, err := GenerateDump([]byte("{"), nil); !errors.Is(err, composefs.ErrFormat) {
		t.Errorf("GenerateDump(bad JSON) = %v", err)
	}
	if _, err := GenerateDump(make(chan int), nil); !errors.Is(err, composefs.ErrInvalidArgument) {
		t.Errorf("GenerateDump(chan) = %v", err)
	}
}

// The blob is the one mkcomposefs writes for the dump (cstorage-images/EXPECTED.tsv).
func TestGenerateComposefsBlob(t *testing.T) {
	expected := map[string]string{}
	for _, line := range strings.Split(string(readCorpus(t, "cstorage-images/EXPECTED.tsv")), "\n") {
		if c := strings.Split(line, "\t"); len(c) == 7 {
			expected[c[0]] = c[3]
		}
	}
	tmp := t.TempDir()
	var wg sync.WaitGroup
	for _, name := range []string{"noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu"} {
		for _, withVerity := range []bool{false, true} {
			wg.Add(1)
			go func(name string, withVerity bool) {
				defer wg.Done()
				toc := readCorpus(t, "cstorage/"+name+"/"+name+".toc.raw.json")
				var verity map[string]string
				dump := "cstorage/" + name + "/" + name + ".dump"
				if withVerity {
					json.Unmarshal(readCorpus(t, "cstorage/"+name+"/"+name+".verity.json"), &verity)
					dump = "cstorage-images/" + name + ".with-verity.dump"
				}
				dir := filepath.Join(tmp, name, fmt.Sprint(withVerity), "composefs-data")
				if err := GenerateComposefsBlob(verity, toc, dir); err != nil {
					t.Errorf("%s: %v", dump, err)
					return
				}
				b, err := os.ReadFile(ComposefsBlobPath(dir))
				if err != nil {
					t.Error(err)
					return
				}
				sum := sha256.Sum256(b)
				if got := hex.EncodeToString(sum[:]); got != expected[dump] {
					t.Errorf("%s: blob sha256 %s, want %s", dump, got, expected[dump])
				}
				if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
					t.Errorf("%s: composefs-data mode %v", dump, st.Mode())
				}
				// Not twice.
				if err := GenerateComposefsBlob(verity, toc, dir); !errors.Is(err, composefs.ErrAlreadyExists) {
					t.Errorf("%s: second GenerateComposefsBlob = %v", dump, err)
				}
			}(name, withVerity)
		}
	}
	wg.Wait()
	if err := GenerateComposefsBlob(nil, []byte("nope"), filepath.Join(tmp, "bad")); !errors.Is(err, composefs.ErrFormat) {
		t.Errorf("bad TOC: %v", err)
	}
	if _, err := os.Stat(ComposefsBlobPath(filepath.Join(tmp, "bad"))); err == nil {
		t.Error("a blob was left for a bad TOC")
	}
}

// The layer blob: the tar conversion's blob for a layer with whiteouts (both fix SPEC §10.1),
// the stock blob for one without, and no root stubs over a lower with a top-level "/db".
func TestGenerateLayerBlob(t *testing.T) {
	tmp := t.TempDir()
	sum := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	for _, name := range []string{"handmade-pax", "noparents-ustar"} {
		toc := readCorpus(t, "cstorage/"+name+"/"+name+".toc.raw.json")
		layerData := filepath.Join(tmp, name, "composefs-data")
		if err := GenerateLayerBlob(nil, toc, layerData, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		stockData := filepath.Join(tmp, name+"-stock", "composefs-data")
		if err := GenerateComposefsBlob(nil, toc, stockData); err != nil {
			t.Fatal(err)
		}
		converted := filepath.Join(tmp, name+"-converted")
		input := filepath.Join(corpusDir(t), "cstorage", name, name+".tar")
		if name == "handmade-pax" {
			input += ".zst"
		}
		res, err := composefs.ConvertLayerFile(context.Background(), input, converted, &composefs.ConvertOptions{Verity: composefs.VerityOff})
		if err != nil {
			t.Fatal(err)
		}
		res.Close()
		got, stock, conv := sum(ComposefsBlobPath(layerData)), sum(ComposefsBlobPath(stockData)), sum(filepath.Join(converted, "composefs-data", "composefs.blob"))
		if got != conv {
			t.Errorf("%s: layer blob %s, the tar conversion's %s", name, got, conv)
		}
		if (got == stock) != (name == "noparents-ustar") {
			t.Errorf("%s: layer blob %s, stock blob %s (equal only without whiteouts)", name, got, stock)
		}
	}
	// Over a classic lower with /db the stubs go.
	lower := filepath.Join(tmp, "lower-db")
	os.MkdirAll(filepath.Join(lower, "diff", "db"), 0o755)
	toc := readCorpus(t, "cstorage/noparents-ustar/noparents-ustar.toc.raw.json")
	over := filepath.Join(tmp, "over-db", "composefs-data")
	if err := GenerateLayerBlob(nil, toc, over, []string{lower}); err != nil {
		t.Fatal(err)
	}
	var d strings.Builder
	if err := composefs.ImageFileToDump(&d, ComposefsBlobPath(over)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.String(), "/db ") || sum(ComposefsBlobPath(over)) == sum(ComposefsBlobPath(filepath.Join(tmp, "noparents-ustar", "composefs-data"))) {
		t.Errorf("stubs kept over a lower with /db")
	}
	if err := GenerateLayerBlob(nil, toc, filepath.Join(tmp, "x", "composefs-data"), []string{filepath.Join(tmp, "missing")}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing lower: %v", err)
	}
}

// A pulled layer's blob, moved aside as the adapter does, is taken at commit when it is the blob
// GenerateLayerBlob would write, and written from the TOC otherwise; it is gone either way.
func TestGenerateLayerBlobFromStaged(t *testing.T) {
	tmp := t.TempDir()
	name := "handmade-archive"
	dir := filepath.Join(corpusDir(t), "cstorage", name)
	toc := readCorpus(t, "cstorage/"+name+"/"+name+".toc.raw.json")
	var annotations map[string]string
	if err := json.Unmarshal(readCorpus(t, "cstorage/"+name+"/"+name+".annotations.json"), &annotations); err != nil {
		t.Fatal(err)
	}
	lowerDB := filepath.Join(tmp, "lower-db")
	os.MkdirAll(filepath.Join(lowerDB, "diff", "db"), 0o755)
	for i, lowers := range [][]string{nil, {lowerDB}} {
		layer := filepath.Join(tmp, fmt.Sprint("layer", i))
		res, err := composefs.PullLayerFile(context.Background(), filepath.Join(dir, name+".zstd-chunked"), layer,
			&composefs.PullOptions{Annotations: annotations, Verity: composefs.VerityOff})
		if err != nil {
			t.Fatal(err)
		}
		res.Close()
		staged := filepath.Join(tmp, fmt.Sprint("staged", i))
		if err := os.Rename(ComposefsBlobPath(filepath.Join(layer, "composefs-data")), staged); err != nil {
			t.Fatal(err)
		}
		got, want := filepath.Join(tmp, fmt.Sprint("got", i)), filepath.Join(tmp, fmt.Sprint("want", i))
		if err := GenerateLayerBlob(nil, StagedTOC{TOC: toc, Blob: staged}, got, lowers); err != nil {
			t.Fatal(err)
		}
		if err := GenerateLayerBlob(nil, toc, want, lowers); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(ComposefsBlobPath(got))
		b, _ := os.ReadFile(ComposefsBlobPath(want))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("lowers %v: the blob from the staged one differs from the TOC's (%d and %d bytes)", lowers, len(a), len(b))
		}
		if _, err := os.Stat(staged); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lowers %v: the staged blob is still there (%v)", lowers, err)
		}
	}
}

// imageSourceChunk and errBadRequest stand for containers/image's types.
type imageSourceChunk struct{ Offset, Length uint64 }

type errBadRequest struct{}

func (errBadRequest) Error() string { return "bad partial request" }

// fakeSeekable serves GetBlobAt from a file as containers/image does: one reader per chunk.
type fakeSeekable struct {
	f         *os.File
	maxChunks int
	refused   int
}

func (s *fakeSeekable) GetBlobAt(chunks []imageSourceChunk) (chan io.ReadCloser, chan error, error) {
	if len(chunks) > s.maxChunks {
		s.refused++
		return nil, nil, errBadRequest{}
	}
	streams := make(chan io.ReadCloser)
	errs := make(chan error)
	go func() {
		defer close(streams)
		defer close(errs)
		for _, c := range chunks {
			streams <- io.NopCloser(io.NewSectionReader(s.f, int64(c.Offset), int64(c.Length)))
		}
	}()
	return streams, errs, nil
}

func TestBlobAtFetcher(t *testing.T) {
	dir := filepath.Join(corpusDir(t), "cstorage", "handmade-pax")
	f, err := os.Open(filepath.Join(dir, "handmade-pax.zstd-chunked"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	src := &fakeSeekable{f: f, maxChunks: 1}
	fetch := BlobAtFetcher(src.GetBlobAt,
		func(off, n uint64) imageSourceChunk { return imageSourceChunk{Offset: off, Length: n} },
		func(err error) bool { var e errBadRequest; return errors.As(err, &e) })
	res, err := composefs.PullLayer(context.Background(), fetch, uint64(st.Size()), filepath.Join(t.TempDir(), "layer"),
		&composefs.PullOptions{Verity: composefs.VerityOff})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	info, _ := res.Info()
	var compress struct {
		DiffID string `json:"diffID"`
	}
	json.Unmarshal(readCorpus(t, "cstorage/handmade-pax/handmade-pax.compress.json"), &compress)
	if info.DiffID != compress.DiffID {
		t.Errorf("DiffID %s, want %s", info.DiffID, compress.DiffID)
	}
	// A GetBlobAt error that is not "too many ranges" fails the pull with it.
	failing := BlobAtFetcher(func([]imageSourceChunk) (chan io.ReadCloser, chan error, error) {
		return nil, nil, errBadRequest{}
	}, func(off, n uint64) imageSourceChunk { return imageSourceChunk{off, n} }, nil)
	_, err = composefs.PullLayer(context.Background(), failing, uint64(st.Size()), filepath.Join(t.TempDir(), "layer"), nil)
	var e errBadRequest
	if !errors.As(err, &e) {
		t.Errorf("failing GetBlobAt: %v", err)
	}
}
