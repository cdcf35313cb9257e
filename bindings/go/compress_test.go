package composefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Compress writes a zstd:chunked blob that pulls (by its annotations) into the same layer as
// converting the original tar, with the original DiffID.
func TestCompress(t *testing.T) {
	for _, name := range []string{"noparents-ustar", "handmade-pax"} {
		c := corpusLayer(t, name)
		tarZst, err := os.ReadFile(c.path(".tar.zst"))
		if err != nil {
			t.Fatal(err)
		}
		var blob bytes.Buffer // not an *os.File: both sides go through pipes
		res, err := Compress(&blob, bytes.NewReader(tarZst), 3)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.DiffID != c.diffID || res.BlobSize != uint64(blob.Len()) || res.TOCDigest == "" || len(res.Annotations) == 0 {
			t.Fatalf("%s: result %+v (blob %d bytes, DiffID want %s)", name, res, blob.Len(), c.diffID)
		}
		tmp := t.TempDir()
		blobPath := filepath.Join(tmp, "blob")
		if err := os.WriteFile(blobPath, blob.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		srv := newBlobServer(t, blobPath)
		pulled := filepath.Join(tmp, "pulled")
		pres, err := PullLayer(context.Background(), srv.fetch, srv.size, pulled, &PullOptions{
			Annotations: res.Annotations, Verity: VerityOff, ExpectedDiffID: c.diffID,
		})
		if err != nil {
			t.Fatalf("%s: pull of the compressed blob: %v", name, err)
		}
		pres.Close()
		conv := filepath.Join(tmp, "converted")
		cres, err := ConvertLayerFile(context.Background(), c.path(".tar.zst"), conv, &ConvertOptions{Verity: VerityOff})
		if err != nil {
			t.Fatal(err)
		}
		cres.Close()
		if sha256File(t, filepath.Join(conv, "composefs-data", "composefs.blob")) != sha256File(t, filepath.Join(pulled, "composefs-data", "composefs.blob")) {
			t.Errorf("%s: the pulled blob differs from the converted one", name)
		}
	}
}

func TestCompressRefusesGarbage(t *testing.T) {
	var out bytes.Buffer
	_, err := Compress(&out, bytes.NewReader([]byte("this is not a layer, not even a tar header")), 0)
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("Compress(garbage) = %v, want ErrFormat", err)
	}
}
