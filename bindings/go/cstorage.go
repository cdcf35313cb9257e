package composefs

/*
#include <stdbool.h>
#include <composefs-storage.h>
*/
import "C"

import "encoding/json"

// PublishedFile is one file PublishLayerMetadata put in the layer store.
type PublishedFile struct {
	// Key is the big-data key, or nil for the tar-split.
	Key    *string `json:"key"`
	Path   string  `json:"path"`
	Size   uint64  `json:"size"`
	Digest string  `json:"digest"`
	// Written is false when the same content was already there.
	Written bool `json:"written"`
}

// PublishedMetadata is the result of PublishLayerMetadata.
type PublishedMetadata struct {
	LayerID  string          `json:"layerId"`
	BigData  []PublishedFile `json:"bigData"`
	TarSplit *PublishedFile  `json:"tarSplit"`
	// DiffSize is the size of the layer's tar (from its tar-split), when it has one.
	DiffSize *uint64 `json:"diffSize"`
	// LayersJSON holds the fields to record in the layer's layers.json entry (through
	// containers/storage): "big-data-names" and, when known, "diff-size".
	LayersJSON map[string]any `json:"layersJson"`
}

// BigDataNames returns the big-data keys, for the layer's BigDataNames in containers/storage.
func (m *PublishedMetadata) BigDataNames() []string {
	var names []string
	for _, f := range m.BigData {
		if f.Key != nil {
			names = append(names, *f.Key)
		}
	}
	return names
}

// PublishLayerMetadata writes the TOC, layer data, layers cache and tar-split of layerDir (a
// layer directory made by this library) into the containers/storage layer store
// graphroot/overlay-layers for the layer layerID, under containers/storage's file names, so that
// containers/storage dedups against the layer and can export it. Publishing twice succeeds;
// other content already there is ErrAlreadyExists and nothing is written. layers.json is never
// edited: record the layer through containers/storage with the result's LayersJSON fields.
//
// With lockStore the call holds containers/storage's layer store lock (layers.lock, an fcntl
// lock) while writing. Pass false when this process holds that lock already (for example inside
// a containers/storage store operation): fcntl locks belong to the process, so taking and
// releasing it here would release the caller's lock.
func PublishLayerMetadata(layerDir, graphroot, layerID string, lockStore bool) (*PublishedMetadata, error) {
	cdir, err := cStringArg(layerDir, "layer dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	croot, err := cStringArg(graphroot, "graph root")
	if err != nil {
		return nil, err
	}
	defer freeCString(croot)
	cid, err := cStringArg(layerID, "layer id")
	if err != nil {
		return nil, err
	}
	defer freeCString(cid)
	var js *C.char
	var cerr *C.cfs_error
	if err := takeError(C.cfs_layer_publish_metadata(cdir, croot, cid, C.bool(lockStore), &js, &cerr), cerr); err != nil {
		return nil, err
	}
	var res PublishedMetadata
	if jerr := json.Unmarshal([]byte(takeString(js)), &res); jerr != nil {
		return nil, &Error{Status: StatusInternal, Message: "composefs: decoding the publish result: " + jerr.Error()}
	}
	return &res, nil
}
