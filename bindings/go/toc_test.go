package composefs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The corpus cases with a TOC and a dump.
var tocCases = []string{"noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu", "empty"}

func readJSONMap(t testing.TB, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// expectedImage returns the expected sha256 of the image of a dump in EXPECTED.tsv.
func expectedImage(t testing.TB, dump string) imageRow {
	t.Helper()
	for _, r := range expectedImages(t) {
		if r.dump == dump {
			return r
		}
	}
	t.Fatalf("%s not in EXPECTED.tsv", dump)
	return imageRow{}
}

func TestGenerateDumpAndImageFromTOC(t *testing.T) {
	corpus := corpusDir(t)
	tmp := t.TempDir()
	for _, name := range tocCases {
		dir := filepath.Join(corpus, "cstorage", name)
		toc, err := os.ReadFile(filepath.Join(dir, name+".toc.raw.json"))
		if err != nil {
			t.Fatal(err)
		}
		verity := readJSONMap(t, filepath.Join(dir, name+".verity.json"))
		for _, v := range []struct {
			verity map[string]string
			dump   string
		}{
			{nil, "cstorage/" + name + "/" + name + ".dump"},
			{verity, "cstorage-images/" + name + ".with-verity.dump"},
		} {
			want, err := os.ReadFile(filepath.Join(corpus, v.dump))
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := GenerateDump(&got, toc, v.verity); err != nil {
				t.Fatalf("%s: %v", v.dump, err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s: GenerateDump differs (%d bytes, want %d)", v.dump, got.Len(), len(want))
			}
			row := expectedImage(t, v.dump)
			image := filepath.Join(tmp, strings.ReplaceAll(v.dump, "/", "_")+".cfs")
			digest, err := WriteImageFromTOC(image, toc, v.verity)
			if err != nil {
				t.Fatalf("%s: %v", v.dump, err)
			}
			if got := sha256File(t, image); got != row.sha256 || digest.String() != row.fsverity {
				t.Errorf("%s: image sha256 %s fs-verity %s, want %s %s", v.dump, got, digest, row.sha256, row.fsverity)
			}
		}
	}
	// The synthetic TOC with its quirks, to an *os.File.
	toc, err := os.ReadFile(filepath.Join(corpus, "cstorage", "synthetic", "quirks.toc.json"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(tmp, "quirks.dump"))
	if err != nil {
		t.Fatal(err)
	}
	if err := GenerateDump(f, toc, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if sha256File(t, f.Name()) != sha256File(t, filepath.Join(corpus, "cstorage", "synthetic", "quirks.dump")) {
		t.Error("quirks: GenerateDump differs")
	}
}

func TestReadTOC(t *testing.T) {
	corpus := corpusDir(t)
	for _, name := range tocCases {
		dir := filepath.Join(corpus, "cstorage", name)
		want, _ := os.ReadFile(filepath.Join(dir, name+".toc.raw.json"))
		var compress struct {
			TOCDigest string `json:"tocDigest"`
		}
		b, _ := os.ReadFile(filepath.Join(dir, name+".compress.json"))
		json.Unmarshal(b, &compress)
		annotations := readJSONMap(t, filepath.Join(dir, name+".annotations.json"))
		for _, ann := range []map[string]string{annotations, nil} {
			toc, digest, err := ReadTOC(filepath.Join(dir, name+".zstd-chunked"), ann)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(toc, want) || digest != compress.TOCDigest {
				t.Errorf("%s: ReadTOC gave %d bytes, digest %s; want %d bytes, %s", name, len(toc), digest, len(want), compress.TOCDigest)
			}
		}
	}
}

func TestTOCErrors(t *testing.T) {
	corpus := corpusDir(t)
	tmp := t.TempDir()
	for _, bad := range [][]byte{nil, []byte("{"), []byte(`[]`), []byte(`{"version":1,"entries":[{"type":"reg","name":"a","mode":"x"}]}`)} {
		err := GenerateDump(io.Discard, bad, nil)
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("GenerateDump(%q) = %v, want ErrFormat", bad, err)
		}
		_, err = WriteImageFromTOC(filepath.Join(tmp, "x.cfs"), bad, nil)
		if err == nil {
			t.Errorf("WriteImageFromTOC(%q) succeeded", bad)
		}
	}
	toc, _ := os.ReadFile(filepath.Join(corpus, "cstorage", "noparents-ustar", "noparents-ustar.toc.raw.json"))
	existing := filepath.Join(tmp, "existing")
	writeFile(t, existing, "keep me")
	_, err := WriteImageFromTOC(existing, toc, nil)
	mustBe(t, err, ErrAlreadyExists, "WriteImageFromTOC(existing)")
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Error("the existing file was overwritten")
	}
	_, err = WriteImageFromTOC("a\x00b", toc, nil)
	mustBe(t, err, ErrInvalidArgument, "NUL in path")
	err = GenerateDump(failingWriter{errBroken}, toc, nil)
	if !errors.Is(err, errBroken) {
		t.Errorf("GenerateDump(failing writer) = %v", err)
	}
	if names := dirEntries(t, tmp); len(names) != 1 {
		t.Errorf("left behind: %v", names)
	}

	_, _, err = ReadTOC(filepath.Join(tmp, "missing"), nil)
	mustBe(t, err, ErrNotFound, "ReadTOC(missing)")
	_, _, err = ReadTOC(existing, nil)
	mustBe(t, err, ErrFormat, "ReadTOC(not a zstd:chunked blob)")
	// A wrong TOC digest in the annotations: the TOC is not the one announced.
	dir := filepath.Join(corpus, "cstorage", "noparents-ustar")
	ann := readJSONMap(t, filepath.Join(dir, "noparents-ustar.annotations.json"))
	ann["io.github.containers.zstd-chunked.manifest-checksum"] = "sha256:" + strings.Repeat("0", 64)
	_, _, err = ReadTOC(filepath.Join(dir, "noparents-ustar.zstd-chunked"), ann)
	if err == nil || !(errors.Is(err, ErrVerification) || errors.Is(err, ErrFormat)) {
		t.Errorf("ReadTOC with a wrong TOC digest = %v, want ErrVerification", err)
	}
	// The non-UTF-8 case: inconsistent TOC and tar-split, as containers/storage finds.
	nonutf8 := filepath.Join(corpus, "cstorage", "nonutf8-pax")
	if _, err := os.Stat(filepath.Join(nonutf8, "nonutf8-pax.zstd-chunked")); err == nil {
		if _, _, err := ReadTOC(filepath.Join(nonutf8, "nonutf8-pax.zstd-chunked"), nil); err == nil {
			t.Log("note: ReadTOC does not check the tar-split (only the pull does)")
		}
	}
}

func TestTOCConcurrent(t *testing.T) {
	corpus := corpusDir(t)
	dir := filepath.Join(corpus, "cstorage", "handmade-archive")
	toc, _ := os.ReadFile(filepath.Join(dir, "handmade-archive.toc.raw.json"))
	want, _ := os.ReadFile(filepath.Join(dir, "handmade-archive.dump"))
	tmp := t.TempDir()
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var got bytes.Buffer
			if err := GenerateDump(&got, toc, nil); err != nil || !bytes.Equal(got.Bytes(), want) {
				t.Errorf("goroutine %d: GenerateDump %v", g, err)
			}
			if _, err := WriteImageFromTOC(filepath.Join(tmp, string(rune('a'+g))), toc, nil); err != nil {
				t.Errorf("goroutine %d: %v", g, err)
			}
			if _, _, err := ReadTOC(filepath.Join(dir, "handmade-archive.zstd-chunked"), nil); err != nil {
				t.Errorf("goroutine %d: %v", g, err)
			}
		}(g)
	}
	wg.Wait()
}
