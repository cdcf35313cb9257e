package composefs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tarSizeOf adds up a tar-split NDJSON as containers/storage's tarSizeFromTarSplit does: the
// payload of each segment (type 2) and the size of each file (type 1).
func tarSizeOf(t *testing.T, f *os.File) int64 {
	t.Helper()
	var total int64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Type    int    `json:"type"`
			Size    int64  `json:"size"`
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("tar-split line %q: %v", sc.Text(), err)
		}
		switch e.Type {
		case 1:
			total += e.Size
		case 2:
			p, err := base64.StdEncoding.DecodeString(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			total += int64(len(p))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}

// The manifest read first (as containers/storage's NewDiffer does) and handed to the pull: the
// same layer as a pull on its own, and the TOC and tar-split fetched once.
func TestReadChunkedManifestThenPull(t *testing.T) {
	for _, name := range []string{"noparents-ustar", "handmade-archive", "handmade-pax"} {
		c := corpusLayer(t, name)
		tmp := t.TempDir()
		srv := newBlobServer(t, c.path(".zstd-chunked"))
		annotations := readJSONMap(t, c.path(".annotations.json"))
		m, err := ReadChunkedManifest(context.Background(), srv.fetch, srv.size, annotations, tmp)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		manifestBytes := srv.bytes.Load()
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.TOCDigest != annotations["io.github.containers.zstd-chunked.manifest-checksum"] || !info.TOCAuthenticated ||
			info.TOCOffset == 0 || info.TOCOffset >= srv.size || info.TarSize == nil {
			t.Errorf("%s: info %+v", name, info)
		}
		toc, err := m.TOC()
		want, _ := os.ReadFile(c.path(".toc.raw.json"))
		if err != nil || !bytes.Equal(toc, want) {
			t.Errorf("%s: TOC() differs from the corpus TOC (%v)", name, err)
		}
		ts, err := m.TarSplit()
		if err != nil {
			t.Fatal(err)
		}
		if got := tarSizeOf(t, ts); info.TarSize != nil && got != *info.TarSize {
			t.Errorf("%s: tarSize %d, but the tar-split adds up to %d", name, *info.TarSize, got)
		}
		ts.Close()

		dir := filepath.Join(tmp, "layer")
		res, err := PullLayer(context.Background(), srv.fetch, srv.size, dir, &PullOptions{
			Manifest: m, Verity: VerityOff, ExpectedDiffID: c.diffID,
		})
		m.Close() // the pull's own reference is gone with the options; the result does not need it
		if err != nil {
			t.Fatalf("%s: pull with the manifest: %v", name, err)
		}
		pinfo, err := res.Info()
		res.Close()
		if err != nil || pinfo.DiffID != c.diffID {
			t.Errorf("%s: %+v %v", name, pinfo, err)
		}
		if got := listObjects(t, dir); len(got) != len(c.objects) {
			t.Errorf("%s: %d objects, want %d", name, len(got), len(c.objects))
		}
		// The pull fetched file data only: no second read of the TOC and tar-split.
		if fileBytes := srv.bytes.Load() - manifestBytes; uint64(fileBytes) != pinfo.BlobBytesFetched {
			t.Errorf("%s: the pull fetched %d bytes, the library counts %d (the manifest took %d)", name,
				fileBytes, pinfo.BlobBytesFetched, manifestBytes)
		}
		alone := filepath.Join(tmp, "alone")
		res, err = PullLayerFile(context.Background(), c.path(".zstd-chunked"), alone, &PullOptions{Annotations: annotations, Verity: VerityOff})
		if err != nil {
			t.Fatal(err)
		}
		res.Close()
		if sha256File(t, filepath.Join(alone, "composefs-data", "composefs.blob")) != sha256File(t, filepath.Join(dir, "composefs-data", "composefs.blob")) {
			t.Errorf("%s: the blob differs from a pull without a manifest", name)
		}
		if _, err := m.TOC(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("TOC after Close: %v", err)
		}
	}
}

func TestReadChunkedManifestErrors(t *testing.T) {
	c := corpusLayer(t, "handmade-pax")
	srv := newBlobServer(t, c.path(".zstd-chunked"))
	annotations := readJSONMap(t, c.path(".annotations.json"))
	ctx := context.Background()

	lying := map[string]string{}
	for k, v := range annotations {
		lying[k] = v
	}
	lying["io.github.containers.zstd-chunked.manifest-checksum"] = "sha256:" + sha256Hex([]byte("another TOC"))
	_, err := ReadChunkedManifest(ctx, srv.fetch, srv.size, lying, "")
	mustBe(t, err, ErrVerification, "a TOC digest that lies")

	_, err = ReadChunkedManifest(ctx, srv.fetch, srv.size, map[string]string{"a": "b"}, "")
	mustBe(t, err, ErrUnsupported, "annotations of no zstd:chunked layer")

	// A blob cut short: the ranges the annotations give are not there.
	_, err = ReadChunkedManifest(ctx, srv.fetch, srv.size/2, annotations, "")
	mustBe(t, err, ErrFormat, "a truncated blob")

	boom := errors.New("registry down")
	_, err = ReadChunkedManifest(ctx, func(context.Context, []Chunk) (io.Reader, error) { return nil, boom }, srv.size, annotations, "")
	if !errors.Is(err, boom) || !errors.Is(err, ErrIO) {
		t.Errorf("a failing fetcher: %v", err)
	}
	_, err = ReadChunkedManifest(ctx, nil, srv.size, annotations, "")
	mustBe(t, err, ErrNullArgument, "no fetcher")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ReadChunkedManifest(cctx, srv.fetch, srv.size, annotations, "")
	mustBe(t, err, ErrCancelled, "a cancelled context")
}

// A source that refuses even one range: the error says so and carries the fetcher's own error
// (containers/storage falls back to a full download on its ErrBadRequest).
func TestReadChunkedManifestRefusedRanges(t *testing.T) {
	c := corpusLayer(t, "handmade-pax")
	srv := newBlobServer(t, c.path(".zstd-chunked"))
	refusal := errors.New("400 Bad Request")
	fetch := func(context.Context, []Chunk) (io.Reader, error) {
		return nil, fmt.Errorf("%w: %w", ErrTooManyRanges, refusal)
	}
	_, err := ReadChunkedManifest(context.Background(), fetch, srv.size, readJSONMap(t, c.path(".annotations.json")), "")
	if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, refusal) {
		t.Errorf("a refused range: %v", err)
	}
}
