// Command cfs-estargz-gen converts a tar into an eStargz blob with the real encoder
// (github.com/containerd/stargz-snapshotter/estargz, as vendored by containers/storage), to make
// test data for this crate's eStargz reader. scripts/gen-estargz.sh builds it inside the
// container-libs snapshot (module go.podman.io/storage) and runs it offline.
//
// Usage: cfs-estargz-gen [options] IN.tar OUT.estargz
//
// Writes OUT.estargz and OUT.estargz.json (digests, sizes and the options used), after reading
// the blob back with the encoder's own reader (estargz.Open) and checking every chunk against its
// chunkDigest. Exits 3 when the encoder refuses the input (estargz.Build fails), 1 on any other
// error, 2 on bad usage.
//
// One deviation from the stock encoder, only where it cannot work: estargz v0.18.2 makes the
// 51-byte footer by gzip-compressing nothing at NoCompression and panics when that is not 51
// bytes ("footer buffer = 48, not 51"), which it is not with the pinned Go 1.27.3: its
// compress/flate ends a stream with a 2-byte fixed-Huffman block, not a 5-byte stored one. There
// the generator passes the encoder's own gzip compressor through estargz.WithCompression with
// only WriteTOCAndFooter redone, writing the footer's bytes as older Go wrote them
// ("footerWorkaround" in OUT.json).
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

const estargzModule = "github.com/containerd/stargz-snapshotter/estargz"

// summary is OUT.json.
type summary struct {
	TOCDigest        digest.Digest `json:"tocDigest"`
	DiffID           digest.Digest `json:"diffID"`
	UncompressedSize int64         `json:"uncompressedSize"`
	BlobSize         int64         `json:"blobSize"`
	BlobDigest       digest.Digest `json:"blobDigest"`
	ChunkSize        int           `json:"chunkSize"`
	MinChunkSize     int           `json:"minChunkSize"`
	Prioritized      []string      `json:"prioritized"`
	// Level is null when the encoder's default (gzip.BestCompression) was used.
	Level *int `json:"level"`
	// Procs is GOMAXPROCS during Build: the encoder splits the input into that many parts, and
	// the split shows in the blob (see -procs).
	Procs       int           `json:"procs"`
	InputSize   int64         `json:"inputSize"`
	InputDigest digest.Digest `json:"inputDigest"`
	Encoder     string        `json:"encoder"`
	// FooterWorkaround is true when the footer was written by footerFixGzip (see the top).
	FooterWorkaround bool `json:"footerWorkaround"`
	// VerifyTOC is the outcome of the encoder's own (*estargz.Reader).VerifyTOC on the blob:
	// "ok" or its error (it refuses TOCs whose chunks share an offset, as -min-chunk-size makes).
	VerifyTOC string `json:"verifyTOC"`
	// Chunks is the number of chunks read back and checked against their chunkDigest.
	Chunks int `json:"chunksVerified"`
}

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func main() {
	if err := run(); err != nil {
		code := 1
		var ee exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		fmt.Fprintf(os.Stderr, "cfs-estargz-gen: %v\n", err)
		os.Exit(code)
	}
}

func run() error {
	fs := flag.NewFlagSet("cfs-estargz-gen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cfs-estargz-gen [options] IN.tar OUT.estargz\n")
		fs.PrintDefaults()
	}
	chunkSize := fs.Int("chunk-size", 0, "estargz.WithChunkSize (0 = the encoder's default, 4 MiB)")
	minChunkSize := fs.Int("min-chunk-size", 0, "estargz.WithMinChunkSize (0 = none: one gzip member per chunk)")
	prioritize := fs.String("prioritize", "", "comma-separated estargz.WithPrioritizedFiles")
	prioritizeFirst := fs.Int("prioritize-first", 0,
		"prioritize the first N regular files of IN in tar order (none if IN has fewer); names need no escaping")
	level := fs.Int("level", 0, "gzip level, estargz.WithCompressionLevel (unset = the encoder's default, 9)")
	procs := fs.Int("procs", 0, "GOMAXPROCS during Build (0 = the runtime's); the blob depends on it")
	if err := fs.Parse(os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return exitError{2, err}
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitError{2, errors.New("want IN.tar OUT.estargz")}
	}
	in, out := fs.Arg(0), fs.Arg(1)
	levelSet := false
	fs.Visit(func(f *flag.Flag) { levelSet = levelSet || f.Name == "level" })
	if *prioritize != "" && *prioritizeFirst > 0 {
		return exitError{2, errors.New("-prioritize and -prioritize-first exclude each other")}
	}

	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	inputDigest, err := digest.Canonical.FromReader(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", in, err)
	}

	s := summary{
		ChunkSize:    *chunkSize,
		MinChunkSize: *minChunkSize,
		Prioritized:  []string{},
		InputSize:    st.Size(),
		InputDigest:  inputDigest,
		Encoder:      encoderVersion(),
	}
	opts := []estargz.Option{estargz.WithChunkSize(*chunkSize), estargz.WithMinChunkSize(*minChunkSize)}
	gzLevel := gzip.BestCompression // the encoder's default
	if levelSet {
		s.Level = level
		gzLevel = *level
		opts = append(opts, estargz.WithCompressionLevel(*level))
	}
	if std := stdlibFooter(0x1234); len(std) != estargz.FooterSize {
		// Only the deflate data may differ from what this Go's gzip writes.
		mine := footerBytes(0x1234)
		if hdr := len(mine) - 13; !bytes.Equal(std[:hdr], mine[:hdr]) || !bytes.Equal(std[len(std)-8:], mine[len(mine)-8:]) {
			return fmt.Errorf("this Go's gzip footer % x is not the expected % x but for its deflate data", std, mine)
		}
		// WithCompression overrides WithCompressionLevel: the level goes in here.
		s.FooterWorkaround = true
		opts = append(opts, estargz.WithCompression(footerFixGzip{
			estargz.NewGzipCompressorWithLevel(gzLevel), &estargz.GzipDecompressor{}, gzLevel}))
	}
	if *prioritize != "" {
		s.Prioritized = strings.Split(*prioritize, ",")
	}
	if *prioritizeFirst > 0 {
		names, err := firstRegular(io.NewSectionReader(f, 0, st.Size()), *prioritizeFirst)
		if err != nil {
			return fmt.Errorf("listing %s: %w", in, err)
		}
		if len(names) < *prioritizeFirst {
			fmt.Fprintf(os.Stderr, "cfs-estargz-gen: %s has %d regular files (< %d): nothing prioritized\n",
				in, len(names), *prioritizeFirst)
		} else {
			s.Prioritized = names
		}
	}
	if len(s.Prioritized) > 0 {
		opts = append(opts, estargz.WithPrioritizedFiles(s.Prioritized))
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	s.Procs = runtime.GOMAXPROCS(0)

	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		return exitError{3, fmt.Errorf("estargz.Build refused %s: %w", in, err)}
	}
	defer blob.Close()

	// Write beside OUT and rename, so that an interrupted run never leaves a partial blob.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil { // CreateTemp makes it 0600
		tmp.Close()
		return err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, h), 1<<20)
	n, err := io.Copy(bw, blob)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		tmp.Close()
		return exitError{3, fmt.Errorf("writing the blob of %s: %w", in, err)}
	}
	if err := blob.Close(); err != nil {
		tmp.Close()
		return err
	}
	s.BlobSize = n
	s.BlobDigest = digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	s.TOCDigest = blob.TOCDigest()
	s.DiffID = blob.DiffID()
	if s.UncompressedSize, err = blob.UncompressedSize(); err != nil {
		tmp.Close()
		return err
	}
	s.VerifyTOC, s.Chunks, err = verify(io.NewSectionReader(tmp, 0, n), s.TOCDigest)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("reading back the blob of %s: %w", in, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}

	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(out+".json", append(js, '\n')); err != nil {
		return err
	}
	// The blob last: a blob newer than its .json is complete (the script's up-to-date check).
	return os.Rename(tmp.Name(), out)
}

// firstRegular returns the names of the first n distinct regular files of the plain tar r, in tar
// order, skipping the names the encoder drops from its input (landmarks, TOC).
func firstRegular(r io.Reader, n int) ([]string, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(4); bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) ||
		bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return nil, errors.New("-prioritize-first needs a plain (uncompressed) tar")
	}
	tr := tar.NewReader(br)
	var names []string
	seen := map[string]bool{}
	for len(names) < n {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		clean := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		switch {
		case seen[clean], clean == estargz.PrefetchLandmark, clean == estargz.NoPrefetchLandmark,
			clean == estargz.TOCTarName:
			continue
		}
		seen[clean] = true
		names = append(names, hdr.Name)
	}
	return names, nil
}

// verify opens the blob with the encoder's reader and checks every chunk of every regular file
// against its chunkDigest and every file against its digest. It returns the outcome of
// VerifyTOC separately, as that refuses some valid blobs.
func verify(sr *io.SectionReader, tocDigest digest.Digest) (verifyTOC string, chunks int, err error) {
	r, err := estargz.Open(sr)
	if err != nil {
		return "", 0, err
	}
	if r.TOCDigest() != tocDigest {
		return "", 0, fmt.Errorf("TOC digest %s, Build said %s", r.TOCDigest(), tocDigest)
	}
	verifyTOC = "ok"
	if _, err := r.VerifyTOC(tocDigest); err != nil {
		verifyTOC = err.Error()
	}
	root, ok := r.Lookup("")
	if !ok {
		return "", 0, errors.New("no root entry")
	}
	seen := map[*estargz.TOCEntry]bool{}
	var walk func(name string, e *estargz.TOCEntry) error
	walk = func(name string, e *estargz.TOCEntry) error {
		if seen[e] { // hardlinks resolve to their target's entry
			return nil
		}
		seen[e] = true
		switch e.Type {
		case "dir":
			var err error
			e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
				err = walk(path.Join(name, base), c)
				return err == nil
			})
			return err
		case "reg":
			n, err := verifyFile(r, name, e)
			chunks += n
			return err
		}
		return nil
	}
	return verifyTOC, chunks, walk("", root)
}

func verifyFile(r *estargz.Reader, name string, e *estargz.TOCEntry) (chunks int, err error) {
	f, err := r.OpenFile(name)
	if err != nil {
		return 0, err
	}
	whole := sha256.New()
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok || ce.ChunkOffset != off || ce.ChunkSize <= 0 {
			return chunks, fmt.Errorf("%q: no chunk at offset %d", name, off)
		}
		want, err := digest.Parse(ce.ChunkDigest)
		if err != nil {
			return chunks, fmt.Errorf("%q: chunk at %d: %w", name, off, err)
		}
		v := want.Verifier()
		if _, err := io.Copy(io.MultiWriter(v, whole), io.NewSectionReader(f, off, ce.ChunkSize)); err != nil {
			return chunks, fmt.Errorf("%q: chunk at %d: %w", name, off, err)
		}
		if !v.Verified() {
			return chunks, fmt.Errorf("%q: chunk at %d does not match its chunkDigest", name, off)
		}
		chunks++
		off += ce.ChunkSize
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, whole.Sum(nil)); got.String() != e.Digest {
		return chunks, fmt.Errorf("%q: content %s, TOC digest %s", name, got, e.Digest)
	}
	return chunks, nil
}

// stdlibFooter is the footer as estargz's gzipFooterBytes makes it with this Go, before its
// length check.
func stdlibFooter(tocOffset int64) []byte {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	gz.Extra = footerExtra(tocOffset)
	gz.Close()
	return buf.Bytes()
}

// footerExtra is the footer's gzip FEXTRA field: subfield "SG", the TOC offset in hex, "STARGZ".
func footerExtra(tocOffset int64) []byte {
	sub := fmt.Sprintf("%016xSTARGZ", tocOffset)
	return append([]byte{'S', 'G', byte(len(sub)), byte(len(sub) >> 8)}, sub...)
}

// footerFixGzip is the encoder's gzip compression (estargz.GzipCompressor's writer,
// estargz.GzipDecompressor) with WriteTOCAndFooter done as in estargz's gzip.go, except that
// the footer's bytes are written directly.
type footerFixGzip struct {
	*estargz.GzipCompressor
	*estargz.GzipDecompressor
	level int
}

func (c footerFixGzip) WriteTOCAndFooter(w io.Writer, off int64, toc *estargz.JTOC, diffHash hash.Hash) (digest.Digest, error) {
	tocJSON, err := json.MarshalIndent(toc, "", "\t")
	if err != nil {
		return "", err
	}
	gz, err := gzip.NewWriterLevel(w, c.level)
	if err != nil {
		return "", err
	}
	gw := io.Writer(gz)
	if diffHash != nil {
		gw = io.MultiWriter(gz, diffHash)
	}
	tw := tar.NewWriter(gw)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     estargz.TOCTarName,
		Size:     int64(len(tocJSON)),
	}); err != nil {
		return "", err
	}
	if _, err := tw.Write(tocJSON); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	if _, err := w.Write(footerBytes(off)); err != nil {
		return "", err
	}
	return digest.FromBytes(tocJSON), nil
}

// footerBytes is the 51-byte footer as older Go's gzip wrote it at NoCompression: an empty gzip
// member with the FEXTRA field, its deflate data one empty stored final block.
func footerBytes(tocOffset int64) []byte {
	extra := footerExtra(tocOffset)
	b := []byte{0x1f, 0x8b, 8, 1 << 2, 0, 0, 0, 0, 0, 255} // magic, deflate, FEXTRA, mtime 0, XFL 0, OS unknown
	b = append(b, byte(len(extra)), byte(len(extra)>>8))
	b = append(b, extra...)
	b = append(b, 1, 0, 0, 0xff, 0xff)    // BFINAL stored block, LEN 0, NLEN ^0
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0) // CRC-32 and size of nothing
	if len(b) != estargz.FooterSize {
		panic(fmt.Sprintf("footer is %d bytes, not %d", len(b), estargz.FooterSize))
	}
	return b
}

func writeFile(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// encoderVersion is the estargz module and version linked in, from the build info.
func encoderVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == estargzModule {
				return d.Path + " " + d.Version
			}
		}
	}
	return estargzModule + " (version unknown)"
}
