package cstorage_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/composefs-storage/composefs-storage/bindings/go/cstorage"
)

// Where the flat object of a file's content lives in the layer's diff directory.
func ExampleRegularFilePathForValidatedDigest() {
	p, err := cstorage.RegularFilePathForValidatedDigest("sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p)
	// Output:
	// 58/91b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
}

// The overlay driver's composefs path, with the library in place of mkcomposefs: the blob of a
// layer's TOC, then the layer mounted (as containers/storage's overlay driver does).
func ExampleGenerateComposefsBlob() {
	toc := []byte(`{"version":1,"entries":[` +
		`{"type":"dir","name":"etc/","mode":493,"modtime":"2024-01-01T00:00:00Z"},` +
		`{"type":"reg","name":"etc/motd","mode":420,"size":6,"modtime":"2024-01-01T00:00:00Z",` +
		`"digest":"sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"}]}`)
	layer, _ := os.MkdirTemp("", "layer-")
	defer os.RemoveAll(layer)

	dataDir := filepath.Join(layer, "composefs-data")
	if err := cstorage.GenerateComposefsBlob(nil, toc, dataDir); err != nil {
		log.Fatal(err)
	}
	st, _ := os.Stat(cstorage.ComposefsBlobPath(dataDir))
	fmt.Println(st.Size() > 0)

	r, _ := cstorage.GenerateDump(toc, nil)
	dump := make([]byte, 200)
	n, _ := r.Read(dump)
	fmt.Printf("%s", dump[:n])
	// Output:
	// true
	// / 0 40755 1 0 0 0 0.0 - - -
	// /etc 0 40755 1 0 0 0 1704067200.0 - - -
	// /etc/motd 6 100644 1 0 0 0 1704067200.0 58/91b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03 - -
}
