package composefs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// estargzDir is where scripts/gen-estargz.sh writes eStargz blobs made by the real encoder:
// $CFS_ESTARGZ_DIR, else build/estargz of the checkout. Under CI a missing directory is a failure.
func estargzDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("CFS_ESTARGZ_DIR")
	if d == "" {
		d = filepath.Join("..", "..", "build", "estargz")
	}
	if _, err := os.Stat(filepath.Join(d, "handmade-archive-c4k.estargz")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no eStargz test blobs in %s: run scripts/gen-estargz.sh", d)
		}
		t.Skipf("no eStargz test blobs in %s (run scripts/gen-estargz.sh)", d)
	}
	return d
}

// eStargz goes wherever zstd:chunked goes: a pull by its annotation (whole, with the DiffID; or
// partial in insecure mode), and a conversion of the file (found by its footer).
func TestEstargzPullAndConvert(t *testing.T) {
	dir := estargzDir(t)
	for _, name := range []string{"handmade-archive-c4k", "etc-doc-gnu-c64k-prefetch"} {
		blob := filepath.Join(dir, name+".estargz")
		var meta struct {
			TOCDigest string `json:"tocDigest"`
			DiffID    string `json:"diffID"`
		}
		data, err := os.ReadFile(blob + ".json")
		if err != nil || json.Unmarshal(data, &meta) != nil {
			t.Fatalf("%s: %v", name, err)
		}
		annotations := map[string]string{"containerd.io/snapshot/stargz/toc.digest": meta.TOCDigest}
		tmp := t.TempDir()

		srv := newBlobServer(t, blob)
		whole := filepath.Join(tmp, "whole")
		res, err := PullLayer(context.Background(), srv.fetch, srv.size, whole, &PullOptions{
			Annotations: annotations, Verity: VerityOff, ExpectedDiffID: meta.DiffID,
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		info, err := res.Info()
		res.Close()
		if err != nil || info.DiffID != meta.DiffID || !info.TOCAuthenticated || info.BlobBytesFetched < srv.size {
			t.Errorf("%s: whole pull %+v, %v", name, info, err)
		}

		srv = newBlobServer(t, blob)
		partial := filepath.Join(tmp, "partial")
		res, err = PullLayer(context.Background(), srv.fetch, srv.size, partial, &PullOptions{
			Annotations: annotations, Verity: VerityOff, InsecureSkipDiffID: true,
		})
		if err != nil {
			t.Fatalf("%s: insecure pull: %v", name, err)
		}
		info, err = res.Info()
		res.Close()
		if err != nil || info.DiffID != "" || srv.requests.Load() < 2 {
			t.Errorf("%s: insecure pull %+v, %v", name, info, err)
		}
		if got, want := listObjects(t, partial), listObjects(t, whole); len(got) != len(want) {
			t.Errorf("%s: %d objects pulled partially, %d whole", name, len(got), len(want))
		}

		conv := filepath.Join(tmp, "converted")
		cres, err := ConvertLayerFile(context.Background(), blob, conv, &ConvertOptions{Verity: VerityOff})
		if err != nil {
			t.Fatalf("%s: convert: %v", name, err)
		}
		diffID, _ := cres.DiffID()
		cres.Close()
		if diffID != meta.DiffID {
			t.Errorf("%s: converted DiffID %s, want %s", name, diffID, meta.DiffID)
		}
		if sha256File(t, filepath.Join(conv, "composefs-data", "composefs.blob")) != sha256File(t, filepath.Join(whole, "composefs-data", "composefs.blob")) {
			t.Errorf("%s: the converted blob differs from the pulled one", name)
		}

		// A stream has no footer: the TOC digest says it is eStargz. The same layer; a wrong
		// expected DiffID fails it with nothing left.
		f, err := os.Open(blob)
		if err != nil {
			t.Fatal(err)
		}
		streamed := filepath.Join(tmp, "streamed")
		sres, err := ConvertLayer(context.Background(), struct{ io.Reader }{f}, streamed, &ConvertOptions{
			Verity: VerityOff, EstargzTOCDigest: meta.TOCDigest, ExpectedDiffID: meta.DiffID,
		})
		f.Close()
		if err != nil {
			t.Fatalf("%s: convert a stream: %v", name, err)
		}
		sres.Close()
		if sha256File(t, filepath.Join(streamed, "composefs-data", "composefs.blob")) != sha256File(t, filepath.Join(conv, "composefs-data", "composefs.blob")) {
			t.Errorf("%s: the streamed conversion differs from the file's", name)
		}
		wrong := filepath.Join(tmp, "wrong-diffid")
		_, err = ConvertLayerFile(context.Background(), blob, wrong, &ConvertOptions{Verity: VerityOff, ExpectedDiffID: meta.TOCDigest})
		if !errors.Is(err, ErrVerification) {
			t.Errorf("%s: wrong expected DiffID: %v", name, err)
		}
		if _, err := os.Stat(wrong); !os.IsNotExist(err) {
			t.Errorf("%s: %s left behind", name, wrong)
		}

		// A TOC digest that is not the blob's: ErrVerification, nothing left.
		srv = newBlobServer(t, blob)
		bad := filepath.Join(tmp, "bad")
		_, err = PullLayer(context.Background(), srv.fetch, srv.size, bad, &PullOptions{
			Annotations: map[string]string{"containerd.io/snapshot/stargz/toc.digest": "sha256:" + meta.DiffID[7:]},
			Verity:      VerityOff,
		})
		if !errors.Is(err, ErrVerification) {
			t.Errorf("%s: wrong TOC digest: %v", name, err)
		}
		if _, err := os.Stat(bad); !os.IsNotExist(err) {
			t.Errorf("%s: %s left behind", name, bad)
		}
	}
}
