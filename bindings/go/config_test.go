package composefs

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	// Only the files the tests name: no environment overrides, no user file.
	for _, v := range []string{"CONTAINERS_STORAGE_CONF", "CONTAINERS_STORAGE_CONF_OVERRIDE", "STORAGE_DRIVER", "STORAGE_OPTS"} {
		os.Unsetenv(v)
	}
	xdg, err := os.MkdirTemp("", "cfs-go-xdg-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", xdg)
	code := m.Run()
	os.RemoveAll(xdg)
	os.Exit(code)
}

func sampleConf(t *testing.T) string {
	dir := os.Getenv("CFS_TEST_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "tests", "data")
	}
	return filepath.Join(dir, "sample-storage.conf")
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigFileSample(t *testing.T) {
	cfg, err := LoadConfigFile(sampleConf(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	for key, want := range map[string]string{
		"driver": "overlay", "graphroot": "/var/lib/containers/storage", "runroot": "/run/containers/storage",
		"mountopt": "nodev,metacopy=on", "use_composefs": "true",
	} {
		if got, err := cfg.Value(key); err != nil || got != want {
			t.Errorf("Value(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for key, want := range map[string]bool{
		"use_composefs": true, "enable_partial_images": true, "convert_images": false, "use_hard_links": false,
	} {
		if got, err := cfg.Bool(key); err != nil || got != want {
			t.Errorf("Bool(%q) = %v, %v; want %v", key, got, err, want)
		}
	}
	js, err := cfg.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var settings map[string]any
	if err := json.Unmarshal([]byte(js), &settings); err != nil {
		t.Fatalf("JSON() is not a JSON object: %v\n%s", err, js)
	}
	if settings["driver"] != "overlay" {
		t.Errorf("JSON() driver = %v", settings["driver"])
	}
	findings, err := cfg.Check()
	if err != nil {
		t.Fatal(err)
	}
	// The sample has two mistakes (see its comments).
	if len(findings) < 2 {
		t.Fatalf("Check() = %+v, want the sample's two mistakes", findings)
	}
	for _, f := range findings {
		if f.Code == "" || f.Message == "" || (f.Severity != "error" && f.Severity != "warning" && f.Severity != "info") {
			t.Errorf("malformed finding %+v", f)
		}
	}
}

func TestLoadConfigWithRoot(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/containers/storage.conf"),
		"[storage]\ndriver = \"overlay\"\ngraphroot = \"/srv/graph\"\n[storage.options.overlay]\nuse_composefs = \"1\"\n")
	cfg, err := LoadConfig(root)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	if g, err := cfg.Value("graphroot"); err != nil || g != "/srv/graph" {
		t.Errorf("graphroot = %q, %v", g, err)
	}
	if b, err := cfg.Bool("use_composefs"); err != nil || !b {
		t.Errorf("use_composefs = %v, %v; want true for \"1\"", b, err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	native := filepath.Join(dir, "native.conf")
	writeFile(t, native, "[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nuse_composefs = true\n")
	_, err := LoadConfigFile(native)
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("native TOML bool: err = %v, want ErrFormat", err)
	}
	if msg := err.Error(); !strings.Contains(msg, native) || !strings.Contains(msg, "line 4") ||
		!strings.Contains(msg, `use_composefs = "true"`) {
		t.Errorf("native TOML bool message lacks file, line or fix: %q", msg)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusFormat {
		t.Errorf("errors.As: %#v", e)
	}

	_, err = LoadConfigFile(filepath.Join(dir, "missing.conf"))
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	if _, err = LoadConfigFile(""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty path: err = %v, want ErrInvalidArgument", err)
	}
	if _, err = LoadConfigFile("a\x00b"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("path with NUL: err = %v, want ErrInvalidArgument", err)
	}

	cfg, err := LoadConfigFile(sampleConf(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Value("no_such_key"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown key: err = %v, want ErrInvalidArgument", err)
	}
	if _, err := cfg.Bool("driver"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Bool of a string key: err = %v, want ErrInvalidArgument", err)
	}
	if err := cfg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := cfg.Value("driver"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Value after Close: err = %v, want ErrInvalidArgument", err)
	}
	if _, err := cfg.Check(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Check after Close: err = %v, want ErrInvalidArgument", err)
	}
}

// Many goroutines share one Config and load their own (left to the finalizer): run with -race.
func TestConfigConcurrentUse(t *testing.T) {
	shared, err := LoadConfigFile(sampleConf(t))
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if d, err := shared.Value("driver"); err != nil || d != "overlay" {
					errs <- err
					return
				}
				own, err := LoadConfigFile(sampleConf(t))
				if err != nil {
					errs <- err
					return
				}
				if _, err := own.Check(); err != nil {
					errs <- err
					return
				}
				if j%2 == 0 {
					own.Close()
				} // else: the finalizer frees it
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	runtime.GC()
	runtime.GC()
}
