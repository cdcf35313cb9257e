package composefs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var errBroken = errors.New("broken stream")

// Every corpus dump, written four ways (path/reader in, path/writer out), gives mkcomposefs's
// exact bytes and fs-verity digest.
func TestWriteImageCorpus(t *testing.T) {
	corpus := corpusDir(t)
	tmp := t.TempDir()
	for i, row := range expectedImages(t) {
		dumpPath := filepath.Join(corpus, row.dump)
		check := func(how string, image []byte, digest Digest) {
			if got := sha256Hex(image); got != row.sha256 {
				t.Errorf("%s (%s): image sha256 %s, want %s", row.dump, how, got, row.sha256)
			}
			if digest.String() != row.fsverity {
				t.Errorf("%s (%s): fs-verity digest %s, want %s", row.dump, how, digest, row.fsverity)
			}
		}
		out := filepath.Join(tmp, fmt.Sprintf("%d.cfs", i))
		d, err := WriteImageFromDumpFile(out, dumpPath, nil)
		if err != nil {
			t.Fatalf("%s: %v", row.dump, err)
		}
		b, _ := os.ReadFile(out)
		check("path to path", b, d)

		dump, err := os.ReadFile(dumpPath)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		// A plain io.Reader and io.Writer go through pipes.
		d, err = WriteImage(&buf, bytes.NewReader(dump), DefaultImageOptions())
		if err != nil {
			t.Fatalf("%s: %v", row.dump, err)
		}
		check("reader to writer", buf.Bytes(), d)

		f, err := os.Open(dumpPath)
		if err != nil {
			t.Fatal(err)
		}
		out2 := filepath.Join(tmp, fmt.Sprintf("%d.b.cfs", i))
		d, err = WriteImageFile(out2, f, nil)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", row.dump, err)
		}
		b, _ = os.ReadFile(out2)
		check("file to path", b, d)

		// The image's own fs-verity digest, from a file and from a reader.
		fd, err := FsverityDigestFile(out2)
		if err != nil || fd.String() != row.fsverity {
			t.Errorf("%s: FsverityDigestFile = %s, %v; want %s", row.dump, fd, err, row.fsverity)
		}
		rd, err := FsverityDigest(bytes.NewReader(b))
		if err != nil || rd != fd {
			t.Errorf("%s: FsverityDigest(reader) = %s, %v; want %s", row.dump, rd, err, fd)
		}
	}
	// Only the images: no temporary file is left.
	for _, n := range dirEntries(t, tmp) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("left behind: %s", n)
		}
	}
}

// The composefs upstream assets with their version flags and strict parsing.
func TestWriteImageOptionsAssets(t *testing.T) {
	dir := filepath.Join(corpusDir(t), "composefs-assets")
	tsv, err := os.ReadFile(filepath.Join(dir, "EXPECTED.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(string(tsv), "\n") {
		c := strings.Split(line, "\t")
		if len(c) != 6 || c[0] == "asset" || strings.HasSuffix(c[0], ".gz") || !strings.HasPrefix(c[5], "verified") {
			continue
		}
		opts := DefaultImageOptions()
		if c[1] != "default" {
			var v uint32
			fmt.Sscan(c[1], &v)
			opts.MinVersion, opts.MaxVersion = v, v
		}
		opts.Strict = c[3] == "1"
		var buf bytes.Buffer
		f, err := os.Open(filepath.Join(dir, c[0]))
		if err != nil {
			t.Fatal(err)
		}
		_, err = WriteImage(&buf, f, opts)
		f.Close()
		if c[4] == "must-fail" {
			if err == nil {
				t.Errorf("%s: accepted, must fail", c[0])
			}
		} else if err != nil {
			t.Errorf("%s: %v", c[0], err)
		} else if got := sha256Hex(buf.Bytes()); got != c[4] {
			t.Errorf("%s: sha256 %s, want %s", c[0], got, c[4])
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("only %d assets checked", checked)
	}
}

func TestImageOptionsEffects(t *testing.T) {
	dump := "/ 0 40755 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n"
	image := func(o *ImageOptions) []byte {
		var buf bytes.Buffer
		if _, err := WriteImage(&buf, strings.NewReader(dump), o); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		return buf.Bytes()
	}
	def := image(nil)
	if !bytes.Equal(def, image(DefaultImageOptions())) {
		t.Error("nil options differ from DefaultImageOptions()")
	}
	noStubs := DefaultImageOptions()
	noStubs.RootWhiteoutStubs = false
	if bytes.Equal(def, image(noStubs)) {
		t.Error("RootWhiteoutStubs=false did not change the image")
	}
	v1 := DefaultImageOptions()
	v1.MinVersion = 1
	if bytes.Equal(def, image(v1)) {
		t.Error("MinVersion=1 did not change the image")
	}
	// Listing either image gives the same tree (the reader hides the stubs, as composefs-info).
	var a, b bytes.Buffer
	if err := ImageToDump(&a, bytes.NewReader(def)); err != nil {
		t.Fatal(err)
	}
	if err := ImageToDump(&b, bytes.NewReader(image(noStubs))); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() || !strings.HasPrefix(a.String(), "/ ") || strings.Count(a.String(), "\n") != 2 {
		t.Errorf("dumps of the images:\n%s\n%s", a.String(), b.String())
	}
}

func TestImageToDumpRoundTrip(t *testing.T) {
	corpus := corpusDir(t)
	for _, row := range expectedImages(t) {
		if row.shipped == "-" {
			continue
		}
		imagePath := filepath.Join(corpus, "cstorage-images", row.shipped)
		var viaPath, viaReader bytes.Buffer
		if err := ImageFileToDump(&viaPath, imagePath); err != nil {
			t.Fatalf("%s: %v", row.shipped, err)
		}
		f, err := os.Open(imagePath)
		if err != nil {
			t.Fatal(err)
		}
		err = ImageToDump(&viaReader, f)
		f.Close()
		if err != nil || !bytes.Equal(viaPath.Bytes(), viaReader.Bytes()) {
			t.Fatalf("%s: ImageToDump from a file differs from ImageFileToDump (%v)", row.shipped, err)
		}
		// dump -> image gives the shipped image again (composefs-info dump | mkcomposefs).
		var again bytes.Buffer
		if _, err := WriteImage(&again, &viaPath, nil); err != nil {
			t.Fatalf("%s: %v", row.shipped, err)
		}
		if got := sha256Hex(again.Bytes()); got != row.sha256 {
			t.Errorf("%s: round trip sha256 %s, want %s", row.shipped, got, row.sha256)
		}
	}
}

func TestImageErrors(t *testing.T) {
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "bad.dump")
	writeFile(t, bad, "this is not a dump\n")
	out := filepath.Join(tmp, "out.cfs")

	_, err := WriteImageFromDumpFile(out, bad, nil)
	mustBe(t, err, ErrFormat, "WriteImageFromDumpFile(bad dump)")
	_, err = WriteImageFromDumpFile(out, filepath.Join(tmp, "missing.dump"), nil)
	mustBe(t, err, ErrNotFound, "WriteImageFromDumpFile(missing)")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dump: %v does not match os.ErrNotExist", err)
	}
	_, err = WriteImageFromDumpFile(out, "a\x00b", nil)
	mustBe(t, err, ErrInvalidArgument, "NUL in path")
	_, err = WriteImageFile(out, strings.NewReader("garbage"), nil)
	mustBe(t, err, ErrFormat, "WriteImageFile(garbage)")
	_, err = WriteImage(io.Discard, strings.NewReader("garbage"), nil)
	mustBe(t, err, ErrFormat, "WriteImage(garbage)")
	// Versions out of range or crossed.
	for _, o := range []*ImageOptions{{MinVersion: 2, MaxVersion: 2}, {MinVersion: 0, MaxVersion: 7}} {
		_, err = WriteImage(io.Discard, strings.NewReader("/ 0 40755 1 0 0 0 0.0 - - -\n"), o)
		mustBe(t, err, ErrInvalidArgument, fmt.Sprintf("options %+v", o))
	}
	// As mkcomposefs, a maximum below the minimum is raised to it.
	crossed := &ImageOptions{MinVersion: 1, MaxVersion: 0, RootWhiteoutStubs: true}
	v1 := &ImageOptions{MinVersion: 1, MaxVersion: 1, RootWhiteoutStubs: true}
	var x, y bytes.Buffer
	if _, err := WriteImage(&x, strings.NewReader("/ 0 40755 1 0 0 0 0.0 - - -\n"), crossed); err != nil {
		t.Fatal(err)
	}
	WriteImage(&y, strings.NewReader("/ 0 40755 1 0 0 0 0.0 - - -\n"), v1)
	if !bytes.Equal(x.Bytes(), y.Bytes()) {
		t.Error("min 1 max 0 differs from min 1 max 1")
	}

	// A failing reader: its error is reported, and no image is left.
	good := "/ 0 40755 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n"
	_, err = WriteImageFile(out, &failingReader{data: []byte(good), err: errBroken}, nil)
	if !errors.Is(err, errBroken) || !errors.Is(err, ErrIO) {
		t.Errorf("failing reader: %v, want errBroken and ErrIO", err)
	}
	if names := dirEntries(t, tmp); len(names) != 1 {
		t.Errorf("left behind after errors: %v", names)
	}
	// A failing writer.
	_, err = WriteImage(failingWriter{errBroken}, strings.NewReader(good), nil)
	if !errors.Is(err, errBroken) {
		t.Errorf("failing writer: %v, want errBroken", err)
	}
	err = ImageToDump(io.Discard, strings.NewReader("not an image"))
	mustBe(t, err, ErrFormat, "ImageToDump(garbage)")
	err = ImageFileToDump(io.Discard, bad)
	mustBe(t, err, ErrFormat, "ImageFileToDump(not an image)")
	err = ImageFileToDump(io.Discard, filepath.Join(tmp, "missing"))
	mustBe(t, err, ErrNotFound, "ImageFileToDump(missing)")
	_, err = FsverityDigestFile(filepath.Join(tmp, "missing"))
	mustBe(t, err, ErrNotFound, "FsverityDigestFile(missing)")
	_, err = FsverityDigest(&failingReader{data: []byte("abc"), err: errBroken})
	if !errors.Is(err, errBroken) {
		t.Errorf("FsverityDigest(failing reader): %v", err)
	}
}

// Known fs-verity digests (sha256, 4 KiB blocks): the empty file and the corpus objects.
func TestFsverityDigestKnown(t *testing.T) {
	d, err := FsverityDigest(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	// fsverity digest of an empty file (fsverity-utils).
	if d.String() != "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95" {
		t.Errorf("empty: %s", d)
	}
	// From the current offset of an *os.File.
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("skip me")
	if _, err := f.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	d2, err := FsverityDigest(f)
	if err != nil || d2 != d {
		t.Errorf("digest from the end of a file = %s, %v; want the empty digest", d2, err)
	}
}

func TestImageConcurrent(t *testing.T) {
	corpus := corpusDir(t)
	rows := expectedImages(t)
	tmp := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			row := rows[g%len(rows)]
			var buf bytes.Buffer
			f, err := os.Open(filepath.Join(corpus, row.dump))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			// Half through a pipe, half from the file.
			var r io.Reader = f
			if g%2 == 0 {
				r = io.MultiReader(f)
			}
			d, err := WriteImage(&buf, r, nil)
			if err != nil {
				errs <- err
				return
			}
			if sha256Hex(buf.Bytes()) != row.sha256 || d.String() != row.fsverity {
				errs <- fmt.Errorf("goroutine %d: %s: wrong image", g, row.dump)
				return
			}
			out := filepath.Join(tmp, fmt.Sprintf("%d.cfs", g))
			if _, err := WriteImageFromDumpFile(out, filepath.Join(corpus, row.dump), nil); err != nil {
				errs <- err
				return
			}
			var listing bytes.Buffer
			if err := ImageFileToDump(&listing, out); err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
