package composefs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// gunzip decompresses a gzip stream, failing the test on bad data.
func gunzip(t *testing.T, gz []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("bad gzip: %v", err)
	}
	return out
}

func TestPublishLayerMetadata(t *testing.T) {
	c := corpusLayer(t, "handmade-archive")
	const id = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99"
	root := filepath.Join(t.TempDir(), "graphroot")
	if err := os.MkdirAll(filepath.Join(root, "overlay"), 0o700); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(root, "overlay", id)
	res, err := ConvertLayerFile(context.Background(), c.path(".tar.zst"), layer, &ConvertOptions{Verity: VerityOff})
	if err != nil {
		t.Fatal(err)
	}
	tarSplit, err := res.TarSplit()
	if err != nil {
		t.Fatal(err)
	}
	wantNDJSON := gunzip(t, tarSplit)
	res.Close()

	m, err := PublishLayerMetadata(layer, root, id, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"zstd-chunked-layer-data", "zstd-chunked-manifest", "chunked-manifest-cache"}
	if got := m.BigDataNames(); !reflect.DeepEqual(got, want) {
		t.Errorf("BigDataNames() = %v, want %v", got, want)
	}
	if m.TarSplit == nil || m.DiffSize == nil || m.LayersJSON["diff-size"] == nil {
		t.Errorf("no tar-split or diff-size in %+v", m)
	}
	store := filepath.Join(root, "overlay-layers")
	for name, own := range map[string]string{
		filepath.Join(id, "=enN0ZC1jaHVua2VkLW1hbmlmZXN0"):     "toc.json",
		filepath.Join(id, "=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ=="): "chunked-manifest-cache",
	} {
		a, err := os.ReadFile(filepath.Join(store, name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(layer, "composefs-data", own))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from the layer's %s", name, own)
		}
	}
	// The tar-split: gzip (the layer keeps zstd) of the NDJSON the conversion made.
	published, err := os.ReadFile(filepath.Join(store, id+".tar-split.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gunzip(t, published), wantNDJSON) {
		t.Errorf("the published tar-split differs from the conversion's")
	}
	if b, _ := os.ReadFile(filepath.Join(store, id, "=enN0ZC1jaHVua2VkLWxheWVyLWRhdGE=")); string(b) != `{"format":1}` {
		t.Errorf("layer data is %q", b)
	}

	// Again: nothing to write. Other content: refused. A bad id: refused.
	m2, err := PublishLayerMetadata(layer, root, id, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m2.BigData {
		if f.Written {
			t.Errorf("%s written again", f.Path)
		}
	}
	if err := os.WriteFile(filepath.Join(store, id, "=enN0ZC1jaHVua2VkLW1hbmlmZXN0"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = PublishLayerMetadata(layer, root, id, true)
	mustBe(t, err, ErrAlreadyExists, "other content")
	_, err = PublishLayerMetadata(layer, root, "../x", true)
	mustBe(t, err, ErrInvalidArgument, "bad id")
	_, err = PublishLayerMetadata(root, root, id, true)
	mustBe(t, err, ErrNotFound, "not a layer dir")
}
