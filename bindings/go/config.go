package composefs

/*
#include <stdlib.h>
#include <composefs-storage.h>
*/
import "C"

import (
	"encoding/json"
	"runtime"
)

// Config holds the effective containers-storage.conf settings, loaded as containers/storage loads
// them. Its methods may be called from several goroutines at once; Close must not race with them.
type Config struct {
	c *C.cfs_config
}

// Finding is one reason why composefs would not take effect (see Config.Check).
type Finding struct {
	Severity string `json:"severity"` // "error" (composefs will not take effect), "warning" or "info"
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func newConfig(c *C.cfs_config) *Config {
	cfg := &Config{c: c}
	// A safety net: a forgotten Close still frees the C handle.
	runtime.SetFinalizer(cfg, (*Config).Close)
	return cfg
}

// LoadConfig loads containers-storage.conf like containers/storage: $CONTAINERS_STORAGE_CONF alone,
// else the user or system file, then the drop-in directories and $CONTAINERS_STORAGE_CONF_OVERRIDE.
// root prefixes the system paths (/etc/containers, /usr/share/containers); "" means "/".
func LoadConfig(root string) (*Config, error) {
	var croot *C.char
	if root != "" {
		var err error
		if croot, err = cStringArg(root, "root"); err != nil {
			return nil, err
		}
		defer freeCString(croot)
	}
	var out *C.cfs_config
	var cerr *C.cfs_error
	if err := takeError(C.cfs_config_load(croot, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// LoadConfigFile loads exactly one file: no drop-ins, no environment.
func LoadConfigFile(path string) (*Config, error) {
	cpath, err := cStringArg(path, "path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	var out *C.cfs_config
	var cerr *C.cfs_error
	if err := takeError(C.cfs_config_load_file(cpath, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// Close frees the configuration. It is safe to call more than once.
func (c *Config) Close() error {
	if c.c != nil {
		C.cfs_config_free(c.c)
		c.c = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Value returns a setting as a string: "driver", "graphroot", "runroot", "imagestore", "mountopt",
// "force_mask", "ostree_repos" (colon-joined), or a boolean key as "true"/"false"; "" when unset.
// An unknown key is an ErrInvalidArgument.
func (c *Config) Value(key string) (string, error) {
	if c.c == nil {
		return "", errClosed("Config")
	}
	ckey, err := cStringArg(key, "key")
	if err != nil {
		return "", err
	}
	defer freeCString(ckey)
	var out *C.char
	var cerr *C.cfs_error
	status := C.cfs_config_get_string(c.c, ckey, &out, &cerr)
	runtime.KeepAlive(c)
	if err := takeError(status, cerr); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Bool returns a boolean setting: "use_composefs", "enable_partial_images", "convert_images",
// "use_hard_links", "insecure_allow_unpredictable_image_contents".
func (c *Config) Bool(key string) (bool, error) {
	if c.c == nil {
		return false, errClosed("Config")
	}
	ckey, err := cStringArg(key, "key")
	if err != nil {
		return false, err
	}
	defer freeCString(ckey)
	var out C.bool
	var cerr *C.cfs_error
	status := C.cfs_config_get_bool(c.c, ckey, &out, &cerr)
	runtime.KeepAlive(c)
	if err := takeError(status, cerr); err != nil {
		return false, err
	}
	return bool(out), nil
}

// JSON returns the effective settings as a JSON object (what `composefs-storage config` prints).
func (c *Config) JSON() (string, error) {
	if c.c == nil {
		return "", errClosed("Config")
	}
	var out *C.char
	var cerr *C.cfs_error
	status := C.cfs_config_to_json(c.c, &out, &cerr)
	runtime.KeepAlive(c)
	if err := takeError(status, cerr); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Check tells why composefs would not take effect with these settings (what
// `composefs-storage config --check` prints). No findings means nothing stands in its way.
func (c *Config) Check() ([]Finding, error) {
	if c.c == nil {
		return nil, errClosed("Config")
	}
	var out *C.char
	var cerr *C.cfs_error
	status := C.cfs_config_check(c.c, &out, &cerr)
	runtime.KeepAlive(c)
	if err := takeError(status, cerr); err != nil {
		return nil, err
	}
	findings := []Finding{}
	if err := json.Unmarshal([]byte(takeString(out)), &findings); err != nil {
		return nil, &Error{Status: StatusInternal, Message: "composefs: decoding the check's findings: " + err.Error()}
	}
	return findings, nil
}
