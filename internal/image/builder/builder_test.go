package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/crypto/ssh"

	"github.com/banger-dev/banger/internal/api"
)

func TestKeyChangesWithGuestFilesAndRecipe(t *testing.T) {
	r := DefaultRecipe()
	files := fstest.MapFS{
		"guestfiles/apply-config.sh":       {Data: []byte("#!/bin/sh\necho one\n")},
		"guestfiles/banger-config.service": {Data: []byte("[Unit]\n")},
	}
	base := recipeKey(r, files)
	if again := recipeKey(r, files); again != base {
		t.Fatalf("key is not deterministic: %s then %s", base, again)
	}
	files["guestfiles/apply-config.sh"] = &fstest.MapFile{Data: []byte("#!/bin/sh\necho two\n")}
	if changed := recipeKey(r, files); changed == base {
		t.Fatal("changing a guest script did not change the key")
	}
	files["guestfiles/new-file"] = &fstest.MapFile{Data: []byte("x")}
	withNew := recipeKey(r, files)
	delete(files, "guestfiles/new-file")
	if withNew == recipeKey(r, files) {
		t.Fatal("adding a guest file did not change the key")
	}
	r2 := r
	r2.Packages = append(append([]string{}, r.Packages...), "vim")
	if recipeKey(r2, files) == recipeKey(r, files) {
		t.Fatal("changing the package list did not change the key")
	}
	if DefaultRecipe().Key() != DefaultRecipe().Key() {
		t.Fatal("Key of the embedded files is not deterministic")
	}
}

func TestEmbeddedGuestFilesAllInstalled(t *testing.T) {
	installed := map[string]bool{}
	for _, g := range guestFileTargets {
		installed[g.src] = true
	}
	err := fs.WalkDir(guestFiles, "guestfiles", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !installed[strings.TrimPrefix(p, "guestfiles/")] {
			t.Errorf("%s is embedded but never installed into the image", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStagesInOrder(t *testing.T) {
	want := []string{"debootstrap", "kernel", "configure", "initramfs", "vmlinux", "filesystem", "work-seed"}
	if got := Stages(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Stages() = %v, want %v", got, want)
	}
	sum := 0.0
	for _, s := range stageWeights {
		sum += s.weight
	}
	if sum < 0.999 || sum > 1.001 {
		t.Fatalf("stage weights add up to %v, want 1", sum)
	}
}

func TestMirrorFromAptConfig(t *testing.T) {
	dir := t.TempDir()
	if got := mirrorFromAptConfig(dir, "bookworm"); got != DefaultMirror {
		t.Fatalf("empty config: got %q, want fallback %q", got, DefaultMirror)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sources.list"),
		[]byte("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://list.example/debian/ bookworm main contrib\n"), 0o644))
	if got := mirrorFromAptConfig(dir, "bookworm"); got != "http://list.example/debian" {
		t.Fatalf("sources.list: got %q", got)
	}
	must(t, os.WriteFile(filepath.Join(dir, "sources.list.d", "debian.sources"), []byte(
		"Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"+
			"Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"), 0o644))
	if got := mirrorFromAptConfig(dir, "bookworm"); got != "http://deb822.example/debian" {
		t.Fatalf("deb822: got %q", got)
	}
	if got := mirrorFromAptConfig(dir, "trixie"); got != DefaultMirror {
		t.Fatalf("other suite: got %q, want fallback", got)
	}
}

func TestKernelImageDependency(t *testing.T) {
	for in, want := range map[string]string{
		"linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)":                 "linux-image-6.1.0-50-cloud-amd64",
		"linux-base, linux-image-6.1.0-9-amd64:amd64 (= 6.1.27-1) | foo": "linux-image-6.1.0-9-amd64",
		"linux-image-cloud-amd64, kmod":                                  "",
		"":                                                               "",
	} {
		if got := kernelImageDependency(in); got != want {
			t.Errorf("kernelImageDependency(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeELF is the smallest ELF64 executable debug/elf accepts.
func fakeELF(t *testing.T, bodySize int) []byte {
	t.Helper()
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1                // 64-bit, little endian, version 1
	binary.LittleEndian.PutUint16(h[16:], 2)  // ET_EXEC
	binary.LittleEndian.PutUint16(h[18:], 62) // EM_X86_64
	binary.LittleEndian.PutUint32(h[20:], 1)
	binary.LittleEndian.PutUint16(h[52:], 64) // e_ehsize
	body := make([]byte, bodySize)
	_, _ = rand.Read(body[:bodySize/2]) // half random, half zeros: compressible but not trivial
	return append(h, body...)
}

func gzipBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	_, err := z.Write(b)
	must(t, err)
	must(t, z.Close())
	return buf.Bytes()
}

// fakeBzImage wraps payload like an x86 bzImage: boot protocol header,
// setup sectors, a decompressor stub, the payload and a size trailer.
func fakeBzImage(payload []byte, withHeader bool) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[0x1f1] = setupSects
	if withHeader {
		copy(img[0x202:], "HdrS")
		binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
		binary.LittleEndian.PutUint32(img[0x248:], 0x200) // payload offset inside protected-mode code
		binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	}
	stub := make([]byte, 0x200)
	copy(stub[0x40:], []byte{0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad}) // a false gzip magic to skip
	img = append(img, stub...)
	img = append(img, payload...)
	return append(img, 0xaa, 0xbb, 0xcc, 0xdd)
}

func TestExtractVmlinux(t *testing.T) {
	elfImage := fakeELF(t, 256<<10)
	cases := map[string][]byte{
		"gzip via boot header": fakeBzImage(gzipBytes(t, elfImage), true),
		"gzip via scan":        fakeBzImage(gzipBytes(t, elfImage), false),
	}
	for _, tool := range []struct {
		name, bin string
		args      []string
	}{
		{"xz", "xz", []string{"-c", "--check=crc32"}},
		{"zstd", "zstd", []string{"-c", "-q"}},
		{"lz4", "lz4", []string{"-l", "-c", "-q"}}, // legacy frames, as Debian's kernels use
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Logf("%s not installed: not testing %s kernels", tool.bin, tool.name)
			continue
		}
		cmd := exec.Command(tool.bin, tool.args...)
		cmd.Stdin = bytes.NewReader(elfImage)
		out, err := cmd.Output()
		must(t, err)
		cases[tool.name+" via boot header"] = fakeBzImage(out, true)
		cases[tool.name+" via scan"] = fakeBzImage(out, false)
	}
	for name, bz := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
			must(t, os.WriteFile(in, bz, 0o644))
			must(t, ExtractVmlinux(context.Background(), in, out))
			got, err := os.ReadFile(out)
			must(t, err)
			if !bytes.Equal(got, elfImage) {
				t.Fatalf("extracted %d bytes, want the %d-byte ELF image", len(got), len(elfImage))
			}
		})
	}
	t.Run("no kernel inside", func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "vmlinuz")
		must(t, os.WriteFile(in, fakeBzImage(gzipBytes(t, []byte("not an elf file at all")), true), 0o644))
		err := ExtractVmlinux(context.Background(), in, filepath.Join(dir, "vmlinux"))
		if err == nil || !strings.Contains(err.Error(), "no compressed ELF kernel") {
			t.Fatalf("got %v, want a 'no compressed ELF kernel' error", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "vmlinux")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a failed extraction left a vmlinux behind")
		}
	})
}

func testHostKey(t *testing.T) (priv, pub []byte, signer ssh.Signer) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	block, err := ssh.MarshalPrivateKey(key, "")
	must(t, err)
	signer, err = ssh.NewSignerFromKey(key)
	must(t, err)
	return pem.EncodeToMemory(block), ssh.MarshalAuthorizedKey(signer.PublicKey()), signer
}

func validDrive(t *testing.T) ConfigDrive {
	priv, pub, _ := testHostKey(t)
	_, _, client := testHostKey(t)
	return ConfigDrive{
		Hostname: "vm-1", IP: "172.30.0.2/24", Gateway: "172.30.0.1", MAC: "52:54:00:AB:CD:EF",
		User: "banger", SearchDomain: "banger.internal", DNS: []string{"172.30.0.1", "1.1.1.1"},
		AuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(client.PublicKey())))},
		HostKeyPrivate: priv, HostKeyPublic: pub,
	}
}

func TestConfigDriveRoundTrip(t *testing.T) {
	c := validDrive(t)
	path := filepath.Join(t.TempDir(), "config.img")
	must(t, WriteConfigDrive(path, c))
	st, err := os.Stat(path)
	must(t, err)
	if st.Size() != ConfigDriveSize || st.Mode().Perm() != 0o600 {
		t.Fatalf("drive is %d bytes mode %v, want %d bytes mode 0600", st.Size(), st.Mode().Perm(), ConfigDriveSize)
	}
	raw, err := os.ReadFile(path)
	must(t, err)
	// The guest finds the drive by these two facts alone.
	if string(raw[:7]) != "banger/" || string(raw[257:262]) != "ustar" {
		t.Fatalf("drive does not start with a ustar header named banger/: %q %q", raw[:7], raw[257:262])
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	got := map[string]string{}
	modes := map[string]int64{}
	first := true
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		if first && (hdr.Name != "banger/" || hdr.Typeflag != tar.TypeDir) {
			t.Fatalf("first entry is %q (type %c), want directory banger/", hdr.Name, hdr.Typeflag)
		}
		first = false
		if !strings.HasPrefix(hdr.Name, "banger/") {
			t.Fatalf("entry %q is outside banger/", hdr.Name)
		}
		data, err := io.ReadAll(tr)
		must(t, err)
		got[strings.TrimPrefix(hdr.Name, "banger/")] = string(data)
		modes[strings.TrimPrefix(hdr.Name, "banger/")] = hdr.Mode
	}
	want := map[string]string{
		"":                         "",
		"hostname":                 "vm-1\n",
		"ip":                       "172.30.0.2/24\n",
		"gateway":                  "172.30.0.1\n",
		"mac":                      "52:54:00:ab:cd:ef\n",
		"user":                     "banger\n",
		"dns":                      "172.30.0.1\n1.1.1.1\n",
		"search":                   "banger.internal\n",
		"authorized_keys":          c.AuthorizedKeys[0] + "\n",
		"ssh_host_ed25519_key":     string(c.HostKeyPrivate),
		"ssh_host_ed25519_key.pub": string(c.HostKeyPublic),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("banger/%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("drive has entries %v, want exactly %d", got, len(want))
	}
	if modes["ssh_host_ed25519_key"] != 0o600 {
		t.Errorf("host key mode %o, want 0600", modes["ssh_host_ed25519_key"])
	}
	if _, err := ssh.ParsePrivateKey([]byte(got["ssh_host_ed25519_key"])); err != nil {
		t.Errorf("host key does not parse back: %v", err)
	}
}

func TestConfigDriveValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*ConfigDrive)
		field  string
	}{
		"uppercase hostname":    {func(c *ConfigDrive) { c.Hostname = "VM1" }, "hostname"},
		"hostname with newline": {func(c *ConfigDrive) { c.Hostname = "vm\nx" }, "hostname"},
		"empty hostname":        {func(c *ConfigDrive) { c.Hostname = "" }, "hostname"},
		"ip without prefix":     {func(c *ConfigDrive) { c.IP = "172.30.0.2" }, "ip"},
		"ipv6 ip":               {func(c *ConfigDrive) { c.IP = "fd00::2/64" }, "ip"},
		"gateway outside":       {func(c *ConfigDrive) { c.Gateway = "10.0.0.1" }, "gateway"},
		"bad gateway":           {func(c *ConfigDrive) { c.Gateway = "gw" }, "gateway"},
		"bad mac":               {func(c *ConfigDrive) { c.MAC = "52:54:00:zz:00:01" }, "mac"},
		"bad user":              {func(c *ConfigDrive) { c.User = "Root; rm" }, "user"},
		"bad search":            {func(c *ConfigDrive) { c.SearchDomain = "a b" }, "search"},
		"bad dns":               {func(c *ConfigDrive) { c.DNS = []string{"8.8.8.8 # x"} }, "dns"},
		"no keys":               {func(c *ConfigDrive) { c.AuthorizedKeys = nil }, "authorized_keys"},
		"multi-line key":        {func(c *ConfigDrive) { c.AuthorizedKeys = []string{"ssh-ed25519 AAAA\nssh-rsa B"} }, "authorized_keys"},
		"no private key":        {func(c *ConfigDrive) { c.HostKeyPrivate = []byte("x") }, "ssh_host_ed25519_key"},
		"rsa public key":        {func(c *ConfigDrive) { c.HostKeyPublic = []byte("ssh-rsa AAAA") }, "ssh_host_ed25519_key.pub"},
	} {
		t.Run(name, func(t *testing.T) {
			c := validDrive(t)
			tc.mutate(&c)
			path := filepath.Join(t.TempDir(), "config.img")
			err := WriteConfigDrive(path, c)
			if !api.IsKind(err, api.KindInvalidInput) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want an invalid_input error about %s", err, tc.field)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatal("an invalid config drive was written anyway")
			}
		})
	}
}

func TestGuestScriptsShellcheckClean(t *testing.T) {
	_, err := exec.LookPath("shellcheck")
	testenv.Require(t, err == nil, "shellcheck is not installed (apt-get install shellcheck)")
	scripts, err := fs.Glob(guestFiles, "guestfiles/*.sh")
	must(t, err)
	if len(scripts) == 0 {
		t.Fatal("no guest scripts found")
	}
	for _, s := range scripts {
		data, err := guestFiles.ReadFile(s)
		must(t, err)
		cmd := exec.Command("shellcheck", "--severity=style", "-")
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", s, err, out)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
