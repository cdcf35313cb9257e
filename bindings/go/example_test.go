package composefs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	composefs "github.com/composefs-storage/composefs-storage/bindings/go"
)

// smallLayer is a tar of one directory and one file.
func smallLayer() *bytes.Buffer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1704067200, 0)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime})
	tw.WriteHeader(&tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6, ModTime: mtime})
	tw.Write([]byte("hello\n"))
	tw.Close()
	return &buf
}

// Write a composefs image from a dump, as `mkcomposefs --from-file - -` would.
func ExampleWriteImage() {
	dump := "/ 0 40755 1 0 0 0 0.0 - - -\n" +
		"/etc 0 40755 1 0 0 0 0.0 - - -\n" +
		"/etc/motd 6 100644 1 0 0 0 1704067200.0 58/91b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03 - -\n"
	var image bytes.Buffer
	digest, err := composefs.WriteImage(&image, strings.NewReader(dump), nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(image.Len(), "bytes, fs-verity", digest)

	// And back to a dump.
	var listing strings.Builder
	if err := composefs.ImageToDump(&listing, &image); err != nil {
		log.Fatal(err)
	}
	fmt.Print(strings.SplitAfter(listing.String(), "\n")[2])
	// Output:
	// 16384 bytes, fs-verity c6d53140e41e6da123d1474f111bea3a930b0c755884ee8d43a76c8abe19c819
	// /etc/motd 6 100644 1 0 0 0 1704067200.0 58/91b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03 - -
}

// The fs-verity digest of some content, as the kernel measures a file holding it.
func ExampleFsverityDigest() {
	digest, err := composefs.FsverityDigest(strings.NewReader("hello\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(digest)
	// Output:
	// 9c76eecc7b76fcb46199cb27b90cf59a660e10575bb0412128905129d5b1c2aa
}

// Convert a layer tar (or .tar.gz, .tar.zst, zstd:chunked) into a composefs layer directory,
// with progress and a deadline.
func ExampleConvertLayer() {
	tmp, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(tmp)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	entries := uint64(0)
	res, err := composefs.ConvertLayer(ctx, smallLayer(), filepath.Join(tmp, "layer"), &composefs.ConvertOptions{
		Verity:   composefs.VerityIfAvailable,
		Progress: func(p composefs.Progress) { entries = p.Entries },
	})
	if errors.Is(err, composefs.ErrCancelled) {
		log.Fatal("timed out")
	} else if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	diffID, _ := res.DiffID()
	stats, _ := res.Stats()
	fmt.Println(entries, "entries,", stats.Objects, "object")
	fmt.Println(diffID)
	object, _ := os.ReadFile(filepath.Join(tmp, "layer", "diff", "58", "91b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"))
	fmt.Printf("%q\n", object)
	// Output:
	// 2 entries, 1 object
	// sha256:f527233cb075fdaece3a8a70d5ab700cb1a54ed4ca7a8579f8df9486f14c4a32
	// "hello\n"
}

// Mount a stack of converted layers (top first) and unmount it. Needs root.
func ExampleMountStack() {
	layers := []composefs.Layer{
		{Dir: "/var/lib/containers/storage/overlay/top"},
		{Dir: "/var/lib/containers/storage/overlay/base", BlobDigest: "9f2c..."},
	}
	if err := composefs.MountStack(layers, "/mnt/rootfs", &composefs.MountOptions{Verity: composefs.VerityRequire}); err != nil {
		if errors.Is(err, composefs.ErrVerification) {
			log.Fatal("a layer's blob is not the one recorded")
		}
		log.Fatal(err)
	}
	defer composefs.Unmount("/mnt/rootfs")
}

// Pull a zstd:chunked layer fetching only the byte ranges it lacks, here from a local file
// standing in for a registry (a real fetcher issues one HTTP request with these ranges).
func ExamplePullLayer() {
	blob, err := os.Open("layer.zstd-chunked")
	if err != nil {
		log.Fatal(err)
	}
	defer blob.Close()
	st, _ := blob.Stat()
	fetch := func(ctx context.Context, chunks []composefs.Chunk) (io.Reader, error) {
		if len(chunks) > 100 {
			// A server answering "400 Bad Request": the puller asks again with fewer.
			return nil, fmt.Errorf("too many ranges: %w", composefs.ErrTooManyRanges)
		}
		parts := make([]io.Reader, len(chunks))
		for i, c := range chunks {
			parts[i] = io.NewSectionReader(blob, int64(c.Offset), int64(c.Length))
		}
		return io.MultiReader(parts...), nil
	}
	res, err := composefs.PullLayer(context.Background(), fetch, uint64(st.Size()), "/var/lib/layers/new", &composefs.PullOptions{
		Annotations:  map[string]string{"io.github.containers.zstd-chunked.manifest-checksum": "sha256:..."},
		SourceLayers: []string{"/var/lib/layers/old"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	info, _ := res.Info()
	fmt.Printf("%s: fetched %d of %d bytes\n", info.DiffID, info.BlobBytesFetched, info.BlobSize)
}

// The TOC of a zstd:chunked blob, and the composefs dump and image of it.
func ExampleReadTOC() {
	toc, digest, err := composefs.ReadTOC("layer.zstd-chunked", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("TOC", digest)
	if err := composefs.GenerateDump(os.Stdout, toc, nil); err != nil {
		log.Fatal(err)
	}
	if _, err := composefs.WriteImageFromTOC("composefs.blob", toc, nil); err != nil {
		log.Fatal(err)
	}
}
