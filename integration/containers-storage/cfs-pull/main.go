// Command cfs-pull drives containers/storage the way podman pulls a layer, for the integration
// harness (integration/containers-storage/run.sh): a blob from a file goes through
// chunked.NewDiffer -> store.PrepareStagedLayer -> store.ApplyStagedLayer, the differ path that
// reaches composefs (zstd:chunked with enable_partial_images, any other layer with
// convert_images). The containers-storage CLI has no such command: its applydiff takes the
// classic untar path.
//
// It is copied into storage/cmd/cfs-pull of the tree under test and built with it, so the same
// source drives stock and patched containers/storage.
//
//	cfs-pull apply [--parent ID] [--annotations FILE] [--digest DIGEST] [--diff-id DIGEST] [--force-mask MODE] [--times] LAYER_ID BLOB
//	cfs-pull compress LAYER.tar BLOB ANNOTATIONS.json
//
// apply prints the new layer's ID; with --times it prints the phases' wall times (seconds) as JSON
// on stderr. --digest gives the blob's digest, as an image manifest does (without it the blob is
// hashed first, which benchmarks leave out: a pull knows the digest). --diff-id is checked against the uncompressed digest the differ computed, as
// containers/image checks a layer's DiffID: a mismatch fails, and nothing is left in the store.
// --force-mask stages the layer with a forced mask (the files' real modes kept in an xattr), as
// rootless podman may: a layer that the patched differ leaves to c/storage's own code.
// compress writes a zstd:chunked blob with containers/storage's own compressor (default level)
// and its annotations as a JSON object.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/storage"
	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/chunked"
	"go.podman.io/storage/pkg/chunked/compressor"
	"go.podman.io/storage/pkg/reexec"
)

// fileSource serves ranges of a local blob, as a registry serves HTTP range requests.
type fileSource struct{ f *os.File }

func (s fileSource) GetBlobAt(chunks []chunked.ImageSourceChunk) (chan io.ReadCloser, chan error, error) {
	streams, errs := make(chan io.ReadCloser), make(chan error)
	go func() {
		defer close(streams)
		defer close(errs)
		for _, c := range chunks {
			streams <- io.NopCloser(io.NewSectionReader(s.f, int64(c.Offset), int64(c.Length)))
		}
	}()
	return streams, errs, nil
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cfs-pull: "+format+"\n", args...)
	os.Exit(1)
}

// failed reports err of the step that failed and its class as containers/image tells errors
// apart (whether it may fall back to an ordinary download), on a last line of its own, "error
// class: STEP, fallback|no fallback", which the harness compares between builds.
func failed(step string, err error) {
	var fallback chunked.ErrFallbackToOrdinaryLayerDownload
	class := "no fallback"
	if errors.As(err, &fallback) {
		class = "fallback"
	}
	fmt.Fprintf(os.Stderr, "cfs-pull: %s: %v\nerror class: %s, %s\n", step, err, step, class)
	os.Exit(1)
}

func apply(args []string) {
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	parent := fs.String("parent", "", "parent layer ID")
	annotationsFile := fs.String("annotations", "", "the layer's OCI annotations (JSON object)")
	blobDigestFlag := fs.String("digest", "", "the blob's digest (sha256:...), as the manifest gives it")
	diffID := fs.String("diff-id", "", "expected DiffID (sha256:...)")
	times := fs.Bool("times", false, "print the phases' wall times on stderr")
	forceMask := fs.Uint("force-mask", 0, "stage with this forced mask (octal), as rootless podman may; 0: none")
	fs.Parse(args)
	if fs.NArg() != 2 {
		die("usage: apply [--parent ID] [--annotations FILE] [--digest DIGEST] [--diff-id DIGEST] [--force-mask MODE] [--times] LAYER_ID BLOB")
	}
	id, blobPath := fs.Arg(0), fs.Arg(1)
	annotations := map[string]string{}
	if *annotationsFile != "" {
		b, err := os.ReadFile(*annotationsFile)
		if err != nil {
			die("%v", err)
		}
		if err := json.Unmarshal(b, &annotations); err != nil {
			die("%s: %v", *annotationsFile, err)
		}
	}
	f, err := os.Open(blobPath)
	if err != nil {
		die("%v", err)
	}
	defer f.Close()
	blobDigest := digest.Digest(*blobDigestFlag)
	if blobDigest == "" {
		if blobDigest, err = digest.Canonical.FromReader(f); err != nil {
			die("%s: %v", blobPath, err)
		}
	} else if err := blobDigest.Validate(); err != nil {
		die("--digest: %v", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		die("%s: %v", blobPath, err)
	}

	options, err := storage.DefaultStoreOptions()
	if err != nil {
		die("store options: %v", err)
	}
	store, err := storage.GetStore(options)
	if err != nil {
		die("store: %v", err)
	}
	defer store.Shutdown(false)

	t0 := time.Now()
	differ, err := chunked.NewDiffer(context.Background(), store, blobDigest, size, annotations, fileSource{f})
	if err != nil {
		failed("NewDiffer", err)
	}
	t1 := time.Now()
	var opts graphdriver.ApplyDiffWithDifferOpts
	if *forceMask != 0 {
		mask := os.FileMode(*forceMask)
		opts.ForceMask = &mask
	}
	out, err := store.PrepareStagedLayer(&opts, differ)
	if err != nil {
		failed("PrepareStagedLayer", err)
	}
	t2 := time.Now()
	if *diffID != "" && out.UncompressedDigest != digest.Digest(*diffID) {
		if err := store.CleanupStagedLayer(out); err != nil {
			fmt.Fprintf(os.Stderr, "cfs-pull: cleanup of the staged layer: %v\n", err)
		}
		failed("DiffID check", fmt.Errorf("DiffID mismatch: the layer is %s, expected %s", out.UncompressedDigest, *diffID))
	}
	layer, err := store.ApplyStagedLayer(storage.ApplyStagedLayerOptions{
		ID: id, ParentLayer: *parent, DiffOutput: out, DiffOptions: &opts,
	})
	if err != nil {
		if err := store.CleanupStagedLayer(out); err != nil {
			fmt.Fprintf(os.Stderr, "cfs-pull: cleanup of the staged layer: %v\n", err)
		}
		failed("ApplyStagedLayer", err)
	}
	t3 := time.Now()
	fmt.Println(layer.ID)
	if *times {
		fmt.Fprintf(os.Stderr, "{\"newDiffer\":%.4f,\"prepareStagedLayer\":%.4f,\"applyStagedLayer\":%.4f}\n",
			t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), t3.Sub(t2).Seconds())
	}
}

func compress(args []string) {
	if len(args) != 3 {
		die("usage: compress LAYER.tar BLOB ANNOTATIONS.json")
	}
	in, err := os.Open(args[0])
	if err != nil {
		die("%v", err)
	}
	defer in.Close()
	out, err := os.Create(args[1])
	if err != nil {
		die("%v", err)
	}
	annotations := map[string]string{}
	w, err := compressor.ZstdCompressor(out, annotations, nil)
	if err != nil {
		die("%v", err)
	}
	if _, err := io.Copy(w, in); err != nil {
		die("compress %s: %v", args[0], err)
	}
	if err := w.Close(); err != nil {
		die("compress %s: %v", args[0], err)
	}
	if err := out.Close(); err != nil {
		die("%v", err)
	}
	b, _ := json.Marshal(annotations)
	if err := os.WriteFile(args[2], b, 0o644); err != nil {
		die("%v", err)
	}
}

func main() {
	if reexec.Init() {
		return
	}
	if len(os.Args) < 2 {
		die("usage: cfs-pull apply|compress ...")
	}
	switch os.Args[1] {
	case "apply":
		apply(os.Args[2:])
	case "compress":
		compress(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}
