package guest

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func fingerprint(k ssh.PublicKey) string { return ssh.FingerprintSHA256(k) }

func parseHostSigner(t *testing.T, h HostKey) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey(h.PrivatePEM)
	if err != nil {
		t.Fatalf("host key PEM does not parse: %v", err)
	}
	return s
}

func TestEnsureClientKeyCreatesOnceThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	k1, err := EnsureClientKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(k1.PrivatePath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, want 0600", st.Mode().Perm())
	}
	priv, _ := os.ReadFile(k1.PrivatePath)
	if !bytes.HasPrefix(priv, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
		t.Fatalf("private key not in OpenSSH format:\n%s", priv)
	}
	pub, err := os.ReadFile(k1.PublicPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(pub) != k1.AuthorizedKey()+"\n" || !strings.HasPrefix(string(pub), "ssh-ed25519 ") {
		t.Fatalf(".pub %q does not match AuthorizedKey %q", pub, k1.AuthorizedKey())
	}
	parsed, err := ParsePublic([]byte(k1.AuthorizedKey()))
	if err != nil || !bytes.Equal(parsed.Marshal(), k1.Signer.PublicKey().Marshal()) {
		t.Fatalf("AuthorizedKey does not parse back to the signer's key: %v", err)
	}

	os.Remove(k1.PublicPath) // a lost .pub is recreated
	k2, err := EnsureClientKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.Signer.PublicKey().Marshal(), k2.Signer.PublicKey().Marshal()) {
		t.Fatal("second call made a new key instead of loading the first")
	}
	if pub2, err := os.ReadFile(k2.PublicPath); err != nil || !bytes.Equal(pub, pub2) {
		t.Fatalf(".pub not restored: %q %v", pub2, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("stray files left in key dir: %v", entries)
	}
}

func TestEnsureClientKeyRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "id_ed25519"), []byte("not a key"), 0o600)
	if _, err := EnsureClientKey(dir); err == nil || !strings.Contains(err.Error(), "parse SSH client key") {
		t.Fatalf("want parse error, got %v", err)
	}
}

func TestNewHostKey(t *testing.T) {
	h, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	signer := parseHostSigner(t, h)
	pub, err := ParsePublic(h.PublicAuthorized)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) || !bytes.Equal(pub.Marshal(), h.Public.Marshal()) {
		t.Fatal("public parts do not belong to the private key")
	}
	h2, _ := NewHostKey()
	if bytes.Equal(h2.Public.Marshal(), h.Public.Marshal()) {
		t.Fatal("two host keys are equal")
	}
}

func TestWriteKnownHostsParsesAndPins(t *testing.T) {
	h, _ := NewHostKey()
	other, _ := NewHostKey()
	path := filepath.Join(t.TempDir(), "known_hosts")
	patterns := []string{"10.0.0.2", "vm.banger", "vm.banger.internal", "127.0.0.1:2222"}
	if err := WriteKnownHosts(path, patterns, h.Public); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatalf("knownhosts.New: %v", err)
	}
	addr := func(s string) *net.TCPAddr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, host := range []string{"10.0.0.2:22", "vm.banger:22", "vm.banger.internal:22", "127.0.0.1:2222"} {
		if err := cb(host, addr("10.0.0.2:22"), h.Public); err != nil {
			t.Errorf("%s not accepted: %v", host, err)
		}
		if err := cb(host, addr("10.0.0.2:22"), other.Public); err == nil {
			t.Errorf("%s accepted a different key", host)
		}
	}
	if err := cb("unrelated:22", addr("10.9.9.9:22"), h.Public); err == nil {
		t.Error("an unlisted host was accepted")
	}
	if err := WriteKnownHosts(path, []string{"a b"}, h.Public); err == nil {
		t.Error("pattern with a space accepted")
	}
	if err := WriteKnownHosts(path, nil, h.Public); err == nil {
		t.Error("no patterns accepted")
	}
}
