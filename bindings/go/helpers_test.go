package composefs

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusDir finds the shared test corpus (<repo>/../shared/corpus), or skips the test.
func corpusDir(t testing.TB) string {
	t.Helper()
	for _, d := range []string{os.Getenv("CFS_CORPUS"), filepath.Join("..", "..", "..", "shared", "corpus"), "/work/shared/corpus"} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(d, "MANIFEST.txt")); err == nil && !st.IsDir() {
			return d
		}
	}
	t.Skip("test corpus not found (set CFS_CORPUS or place it at ../shared/corpus next to the repository)")
	return ""
}

// imageRow is one row of cstorage-images/EXPECTED.tsv.
type imageRow struct {
	dump, variant, sha256, fsverity, shipped string
}

func expectedImages(t testing.TB) []imageRow {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir(t), "cstorage-images", "EXPECTED.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []imageRow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 7 || c[0] == "dump" {
			continue
		}
		rows = append(rows, imageRow{dump: c[0], variant: c[1], sha256: c[3], fsverity: c[5], shipped: c[6]})
	}
	if len(rows) < 10 {
		t.Fatalf("EXPECTED.tsv has %d rows", len(rows))
	}
	return rows
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

// mustBe fails unless err matches the sentinel (and is an *Error with a message).
func mustBe(t testing.TB, err error, sentinel error, what string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: error %v, want one matching %v", what, err, sentinel)
	}
	var e *Error
	if !errors.As(err, &e) || err.Error() == "" {
		t.Fatalf("%s: error %#v is not an *Error with a message", what, err)
	}
}

// dirEntries lists a directory's names.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// failingReader yields some bytes, then an error.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// failingWriter fails every write.
type failingWriter struct{ err error }

func (w failingWriter) Write(p []byte) (int, error) { return 0, w.err }
