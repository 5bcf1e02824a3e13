package paths

import "testing"

func TestNewDefaults(t *testing.T) {
	l, err := New("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if l.StateDir != DefaultStateDir || l.RunDir != DefaultRunDir || l.Socket != DefaultSocket {
		t.Fatalf("defaults: %+v", l)
	}
}

func TestPrivateStateDirGetsPrivateRunDir(t *testing.T) {
	l, err := New("/tmp/x", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if l.RunDir != "/tmp/x/run" || l.Socket != "/tmp/x/run/banger.sock" {
		t.Fatalf("layout: %+v", l)
	}
	if got := l.VMRunDir("abc123"); got != "/tmp/x/run/vms/abc123" {
		t.Fatalf("VMRunDir = %s", got)
	}
}

func TestBadIDPanics(t *testing.T) {
	l, _ := New("/tmp/x", "", "")
	for _, id := range []string{"../etc", "", "a/b", "A"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("VMDir(%q) did not panic", id)
				}
			}()
			l.VMDir(id)
		}()
	}
}
