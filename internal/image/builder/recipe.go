// Package builder builds banger's default guest image from Debian packages
// (debootstrap, Debian's cloud kernel, an initramfs with the virtio drivers)
// and owns the guest side of the boot contract: the files embedded under
// guestfiles/ and the config drive format the host writes for each VM.
//
// A build runs in a temporary directory next to the cache entry and is
// renamed into place only when complete, so a cache entry either exists
// whole (its manifest.json is written last) or not at all.
package builder

import (
	"bufio"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed guestfiles
var guestFiles embed.FS

// builderVersion is part of every cache key; bump it when the build steps
// change in a way the recipe and guest files do not capture.
const builderVersion = "2"

// DefaultMirror is used when the host's apt configuration names no Debian mirror.
const DefaultMirror = "http://deb.debian.org/debian"

// Recipe says what goes into an image.
type Recipe struct {
	Name            string
	Suite           string
	Mirror          string
	Packages        []string // passed to debootstrap --include
	KernelPackage   string   // a Debian metapackage such as linux-image-cloud-amd64
	User            string   // the guest user (uid 1000, passwordless sudo)
	RootFSSizeMiB   int      // minimum size; grown when the content needs more
	WorkSeedSizeMiB int
}

// DefaultRecipe is the recipe behind `banger image build default`.
func DefaultRecipe() Recipe {
	return Recipe{
		Name:   "default",
		Suite:  "bookworm",
		Mirror: mirrorFromAptConfig("/etc/apt", "bookworm"),
		Packages: []string{
			"systemd-sysv", "openssh-server", "iproute2", "git", "sudo",
			"ca-certificates", "curl", "procps", "initramfs-tools", "kmod",
			"udev", "less", "iputils-ping",
		},
		KernelPackage:   "linux-image-cloud-amd64",
		User:            "banger",
		RootFSSizeMiB:   2048,
		WorkSeedSizeMiB: 64,
	}
}

// Key identifies the image a recipe builds: a hash over the recipe, the
// embedded guest files and the builder version, so changing any guest
// script yields a new cache entry.
func (r Recipe) Key() string { return recipeKey(r, guestFiles) }

func recipeKey(r Recipe, files fs.FS) string {
	h := sha256.New()
	enc, _ := json.Marshal(r) // a struct of strings and ints cannot fail
	h.Write([]byte("banger-image-builder/" + builderVersion + "\n"))
	h.Write(enc)
	var paths []string
	_ = fs.WalkDir(files, "guestfiles", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			paths = append(paths, p)
		}
		return err
	})
	sort.Strings(paths)
	for _, p := range paths {
		data, _ := fs.ReadFile(files, p)
		sum := sha256.Sum256(data)
		h.Write([]byte("\n" + p + "\x00" + hex.EncodeToString(sum[:])))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// mirrorFromAptConfig returns the first Debian archive URI that the apt
// configuration under etcApt uses for suite (deb822 .sources files first,
// then one-line sources.list files), or DefaultMirror.
func mirrorFromAptConfig(etcApt, suite string) string {
	sources, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.sources"))
	sort.Strings(sources)
	for _, f := range sources {
		if m := mirrorFromDeb822(f, suite); m != "" {
			return m
		}
	}
	lists, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.list"))
	sort.Strings(lists)
	for _, f := range append([]string{filepath.Join(etcApt, "sources.list")}, lists...) {
		if m := mirrorFromOneLine(f, suite); m != "" {
			return m
		}
	}
	return DefaultMirror
}

func mirrorFromDeb822(path, suite string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, stanza := range strings.Split(string(data), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if fields["enabled"] == "no" || !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], suite) || !hasWord(fields["components"], "main") {
			continue
		}
		if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
			return strings.TrimRight(uris[0], "/")
		}
	}
	return ""
}

func mirrorFromOneLine(path, suite string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[0] != "deb" {
			continue
		}
		rest := fields[1:]
		if strings.HasPrefix(rest[0], "[") { // options like [arch=amd64 signed-by=...]
			for len(rest) > 0 && !strings.HasSuffix(rest[0], "]") {
				rest = rest[1:]
			}
			if len(rest) > 0 {
				rest = rest[1:]
			}
		}
		if len(rest) >= 3 && rest[1] == suite && hasWord(strings.Join(rest[2:], " "), "main") {
			return strings.TrimRight(rest[0], "/")
		}
	}
	return ""
}

func hasWord(list, word string) bool {
	for _, w := range strings.Fields(list) {
		if w == word {
			return true
		}
	}
	return false
}
