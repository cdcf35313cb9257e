package composefs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// needMount skips unless the test can mount EROFS and overlayfs.
func needMount(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount tests need root (CAP_SYS_ADMIN)")
	}
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Skipf("cannot read /proc/filesystems: %v", err)
	}
	for _, fs := range []string{"erofs", "overlay"} {
		if !strings.Contains(string(fss), "\t"+fs+"\n") {
			t.Skipf("the kernel has no %s (not in /proc/filesystems)", fs)
		}
	}
}

// mountedUnder lists the mountinfo lines whose mount point is under dir.
func mountedUnder(t testing.TB, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			lines = append(lines, l)
		}
	}
	return lines
}

// convertedLayer converts a corpus layer into dir/name.
func convertedLayer(t testing.TB, c layerCase, dir, name string) string {
	t.Helper()
	layer := filepath.Join(dir, name)
	res, err := ConvertLayerFile(context.Background(), c.path(".tar"), layer, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	return layer
}

func readSha(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the mounted file: %v", err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The noparents-ustar files and their contents' sha256 (their object names in the dump).
const (
	f1Path = "usr/lib/x/y/f1"
	f1Sha  = "4355a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865"
	f2Path = "opt/z/f2"
	f2Sha  = "53c234e5e8472b6ac51c1ae1cab3fe06fad053beb8ebfd8977b010655bfdd3c3"
)

func TestMountStack(t *testing.T) {
	needMount(t)
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	layer := convertedLayer(t, c, tmp, "layer")
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	digest, err := BlobDigest(filepath.Join(layer, "composefs-data", "composefs.blob"))
	if err != nil || len(digest) != 64 {
		t.Fatalf("BlobDigest = %q, %v", digest, err)
	}
	if err := MountStack([]Layer{{Dir: layer, BlobDigest: digest}}, mnt, nil); err != nil {
		t.Fatal(err)
	}
	if got := readSha(t, filepath.Join(mnt, f1Path)); got != f1Sha {
		t.Errorf("%s: sha256 %s, want %s", f1Path, got, f1Sha)
	}
	if target, err := os.Readlink(filepath.Join(mnt, "usr/lib/x/y/s1")); err != nil || target != "f1" {
		t.Errorf("symlink s1 -> %q, %v", target, err)
	}
	if len(mountedUnder(t, mnt)) == 0 {
		t.Error("nothing in mountinfo at the mount point")
	}
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if m := mountedUnder(t, tmp); len(m) != 0 {
		t.Fatalf("still mounted after Unmount: %v", m)
	}
	// Unmounting again: not an overlay mount point any more.
	mustBe(t, Unmount(mnt), ErrInvalidArgument, "Unmount(not mounted)")
}

func TestMountStackOptions(t *testing.T) {
	needMount(t)
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	lower := convertedLayer(t, c, tmp, "lower")
	top := convertedLayer(t, c, tmp, "top")
	for _, d := range []string{"mnt", "upper", "work", "cache"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(tmp, "mnt")
	opts := &MountOptions{
		UpperDir: filepath.Join(tmp, "upper"), WorkDir: filepath.Join(tmp, "work"),
		Verity: VerityOff, ErofsBacking: ErofsLoop, StubCacheDir: filepath.Join(tmp, "cache"), NoFlatten: true,
	}
	if err := MountStack([]Layer{{Dir: top}, {Dir: lower}}, mnt, opts); err != nil {
		t.Fatal(err)
	}
	// Read-write: a new file lands in the upper dir.
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644); err != nil {
		t.Errorf("writing into the read-write mount: %v", err)
	}
	if got := readSha(t, filepath.Join(mnt, f2Path)); got != f2Sha {
		t.Errorf("%s: sha256 %s", f2Path, got)
	}
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "upper", "new")); err != nil {
		t.Errorf("the new file is not in the upper dir: %v", err)
	}
	if m := mountedUnder(t, tmp); len(m) != 0 {
		t.Fatalf("still mounted: %v", m)
	}
}

func TestMountErrors(t *testing.T) {
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	mustBe(t, MountStack(nil, mnt, nil), ErrInvalidArgument, "no layers")
	mustBe(t, MountStack([]Layer{{Dir: "a\x00b"}}, mnt, nil), ErrInvalidArgument, "NUL in a layer dir")
	for _, o := range []*MountOptions{{Verity: "sometimes"}, {ErofsBacking: "floppy"}, {UpperDir: tmp}} {
		mustBe(t, MountStack([]Layer{{Dir: tmp}}, mnt, o), ErrInvalidArgument, "bad options")
	}
	mustBe(t, Unmount(tmp), ErrInvalidArgument, "Unmount(not a mount point)")
	_, err := BlobDigest(filepath.Join(tmp, "missing"))
	mustBe(t, err, ErrNotFound, "BlobDigest(missing)")

	needMount(t)
	c := corpusLayer(t, "noparents-ustar")
	layer := convertedLayer(t, c, tmp, "layer")
	wrong := strings.Repeat("0", 64)
	mustBe(t, MountStack([]Layer{{Dir: layer, BlobDigest: wrong}}, mnt, nil), ErrVerification, "wrong blob digest")
	mustBe(t, MountStack([]Layer{{Dir: layer, BlobDigest: "xyz"}}, mnt, nil), ErrInvalidArgument, "malformed blob digest")
	mustBe(t, MountStack([]Layer{{Dir: layer}}, mnt, &MountOptions{Verity: VerityRequire}), ErrVerification, "require without digest")
	if m := mountedUnder(t, tmp); len(m) != 0 {
		t.Fatalf("a failed mount left: %v", m)
	}
}

func TestMountConcurrent(t *testing.T) {
	needMount(t)
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	layer := convertedLayer(t, c, tmp, "layer")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			mnt := filepath.Join(tmp, "mnt", string(rune('a'+g)))
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				t.Error(err)
				return
			}
			if err := MountStack([]Layer{{Dir: layer}}, mnt, nil); err != nil {
				t.Errorf("mount %d: %v", g, err)
				return
			}
			if got := readSha(t, filepath.Join(mnt, f1Path)); got != f1Sha {
				t.Errorf("mount %d: wrong content", g)
			}
			if err := Unmount(mnt); err != nil {
				t.Errorf("unmount %d: %v", g, err)
			}
		}(g)
	}
	wg.Wait()
	if m := mountedUnder(t, tmp); len(m) != 0 {
		t.Fatalf("still mounted: %v", m)
	}
}

func TestMountCleanup(t *testing.T) {
	needMount(t)
	c := corpusLayer(t, "noparents-ustar")
	tmp := t.TempDir()
	layer := convertedLayer(t, c, tmp, "layer")
	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	cache := filepath.Join(tmp, "cache")
	opts := &MountOptions{StubCacheDir: cache}
	if err := MountStack([]Layer{{Dir: layer}}, mnt, opts); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	images, _ := filepath.Glob(filepath.Join(cache, "*.blob"))
	if len(images) != 1 {
		t.Fatalf("want the bottom layer's derived image in the cache, have %v", images)
	}
	r, err := MountCleanup(&MountOptions{StubCacheDir: cache, CacheLimits: &CacheLimits{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.ImagesEvicted != 1 {
		t.Errorf("report %+v: want 1 image evicted", r)
	}
	if left, _ := os.ReadDir(cache); len(left) != 0 {
		t.Errorf("cache not emptied: %v", left)
	}
}
