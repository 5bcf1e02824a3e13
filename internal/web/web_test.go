package web

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// fakeService implements the api.Service methods the UI uses and records
// the actions it receives. Anything else panics through the nil embedded
// interface, which flags a UI calling something unexpected.
type fakeService struct {
	api.Service
	mu      sync.Mutex
	calls   []string
	vms     []api.VM
	failVM  string
	logData string
}

func (f *fakeService) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeService) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeService) DaemonVersion(context.Context) (api.VersionInfo, error) {
	return api.VersionInfo{Version: "test", Backends: []api.Backend{{Name: "qemu", Available: true, Accel: "tcg"}}}, nil
}

func (f *fakeService) VMList(context.Context, api.VMListParams) (api.VMListResult, error) {
	return api.VMListResult{VMs: f.vms}, nil
}

func (f *fakeService) VMStats(_ context.Context, p api.VMRef) (api.VMStats, error) {
	if p.VM == f.failVM {
		return api.VMStats{}, api.Errorf(api.KindUnavailable, "stats of %s unavailable", p.VM)
	}
	return api.VMStats{VM: p.VM, State: api.VMRunning, CPUPercent: 12.5, RSSBytes: 1 << 20}, nil
}

func (f *fakeService) ImageList(context.Context) (api.ImageListResult, error) {
	return api.ImageListResult{Images: []api.Image{{ID: "img1", Name: "default"}}}, nil
}

func (f *fakeService) OpList(context.Context, api.OpListParams) (api.OpListResult, error) {
	ops := []api.Operation{{ID: "op-run", State: api.OpRunning, Progress: 0.5}}
	for range 10 {
		ops = append(ops, api.Operation{ID: "op-done", State: api.OpSucceeded})
	}
	return api.OpListResult{Ops: ops}, nil
}

func (f *fakeService) VMStart(_ context.Context, p api.VMRef) (api.VM, error) {
	f.record("start " + p.VM)
	if p.VM == "missing" {
		return api.VM{}, api.NotFound("vm", p.VM)
	}
	return api.VM{Name: p.VM, State: api.VMRunning}, nil
}

func (f *fakeService) VMStop(_ context.Context, p api.VMStopParams) (api.VM, error) {
	f.record("stop " + p.VM)
	return api.VM{Name: p.VM, State: api.VMStopped}, nil
}

func (f *fakeService) VMDelete(_ context.Context, p api.VMDeleteParams) (api.Empty, error) {
	if p.Force {
		f.record("delete --force " + p.VM)
	} else {
		f.record("delete " + p.VM)
	}
	return api.Empty{}, nil
}

func (f *fakeService) SessionList(_ context.Context, p api.VMRef) (api.SessionListResult, error) {
	return api.SessionListResult{Sessions: []api.Session{{VM: p.VM, Name: "agent", State: api.SessionRunning}}}, nil
}

func (f *fakeService) SessionLogs(_ context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error) {
	f.record("logs " + p.VM + "/" + p.Session)
	d := f.logData
	if int64(len(d)) > p.TailBytes {
		d = d[int64(len(d))-p.TailBytes:]
	}
	return api.SessionLogsResult{Data: []byte(d), Next: int64(len(f.logData)), Size: int64(len(f.logData))}, nil
}

const testToken = "0123456789abcdef0123456789abcdef-test"

// testUI serves the UI on a real loopback listener, so the Host check
// sees the address a browser would use.
type testUI struct {
	srv  *Server
	fake *fakeService
	url  string // http://127.0.0.1:PORT
	host string
}

func newTestUI(t *testing.T) *testUI {
	t.Helper()
	f := &fakeService{vms: []api.VM{
		{Name: "dev", State: api.VMRunning, IP: "172.30.0.2", CPUs: 2, MemoryMiB: 1024, VMM: "qemu", Accel: "tcg"},
		{Name: "old", State: api.VMStopped, CPUs: 1, MemoryMiB: 512, VMM: "qemu"},
	}, failVM: "old", logData: strings.Repeat("x", 100) + "last line\n"}
	s, err := New(f, Options{Token: testToken, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler(ln.Addr().String()))
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return &testUI{srv: s, fake: f, url: hs.URL, host: ln.Addr().String()}
}

// noRedirect keeps redirects visible to the test.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (u *testUI) do(t *testing.T, method, path string, hdr map[string]string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (u *testUI) bearer() map[string]string {
	return map[string]string{"Authorization": "Bearer " + testToken}
}

// post returns headers a same-origin page would send with a POST.
func (u *testUI) post() map[string]string {
	return map[string]string{"Cookie": cookieName + "=" + testToken, csrfHeader: u.srv.csrf,
		"Origin": "http://" + u.host, "Content-Type": "application/json"}
}

func wantStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, b)
	}
}

func TestTokenRequired(t *testing.T) {
	u := newTestUI(t)
	for _, path := range []string{"/", "/api/state", "/static/app.js", "/api/vms/dev/sessions"} {
		wantStatus(t, u.do(t, "GET", path, nil, ""), http.StatusUnauthorized)
		wantStatus(t, u.do(t, "GET", path, map[string]string{"Authorization": "Bearer wrong"}, ""), http.StatusUnauthorized)
		wantStatus(t, u.do(t, "GET", path, map[string]string{"Cookie": cookieName + "=wrong"}, ""), http.StatusUnauthorized)
	}
	wantStatus(t, u.do(t, "GET", "/?token=wrong", nil, ""), http.StatusUnauthorized)
	wantStatus(t, u.do(t, "GET", "/api/state", u.bearer(), ""), http.StatusOK)
}

func TestTokenLinkSetsCookieAndRedirects(t *testing.T) {
	u := newTestUI(t)
	resp := u.do(t, "GET", "/?token="+testToken, nil, "")
	wantStatus(t, resp, http.StatusSeeOther)
	if loc := resp.Header.Get("Location"); loc != "/" {
		t.Fatalf("redirect to %q, want / (token must leave the URL)", loc)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == cookieName {
			c = k
		}
	}
	if c == nil || c.Value != testToken || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Fatalf("cookie %+v: want HttpOnly SameSite=Strict with the token", c)
	}
	page := u.do(t, "GET", "/", map[string]string{"Cookie": c.Name + "=" + c.Value}, "")
	wantStatus(t, page, http.StatusOK)
	b, _ := io.ReadAll(page.Body)
	for _, want := range []string{"experimental", `name="csrf-token" content="` + u.srv.csrf + `"`, "tcg acceleration"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(string(b), testToken) {
		t.Error("page embeds the access token")
	}
	if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestWrongHostRefused(t *testing.T) {
	u := newTestUI(t)
	_, port, _ := net.SplitHostPort(u.host)
	for _, host := range []string{"evil.example:" + port, "127.0.0.1:1", "localhost", "banger.internal:" + port} {
		h := u.bearer()
		h["Host"] = host
		wantStatus(t, u.do(t, "GET", "/api/state", h, ""), http.StatusForbidden)
	}
	h := u.bearer()
	h["Host"] = "localhost:" + port
	wantStatus(t, u.do(t, "GET", "/api/state", h, ""), http.StatusOK)
}

func TestPostNeedsCSRFAndSameOrigin(t *testing.T) {
	u := newTestUI(t)
	cases := map[string]func(h map[string]string){
		"no csrf":        func(h map[string]string) { delete(h, csrfHeader) },
		"wrong csrf":     func(h map[string]string) { h[csrfHeader] = "nope" },
		"foreign origin": func(h map[string]string) { h["Origin"] = "http://evil.example" },
		"null origin":    func(h map[string]string) { h["Origin"] = "null" },
		"other port": func(h map[string]string) {
			h["Origin"] = "http://127.0.0.1:1"
		},
		"foreign referer": func(h map[string]string) {
			delete(h, "Origin")
			h["Referer"] = "http://evil.example/page"
		},
		"neither": func(h map[string]string) { delete(h, "Origin") },
	}
	for name, mut := range cases {
		h := u.post()
		mut(h)
		resp := u.do(t, "POST", "/api/vms/dev/stop", h, "{}")
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, resp.StatusCode)
		}
	}
	// Without the token a POST is refused before anything else.
	h := u.post()
	delete(h, "Cookie")
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/stop", h, "{}"), http.StatusUnauthorized)
	if calls := u.fake.recorded(); len(calls) != 0 {
		t.Fatalf("refused requests reached the service: %v", calls)
	}
	// Same-origin Referer is accepted when Origin is absent.
	h = u.post()
	delete(h, "Origin")
	h["Referer"] = "http://" + u.host + "/"
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/stop", h, "{}"), http.StatusOK)
}

func TestActionsCallService(t *testing.T) {
	u := newTestUI(t)
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/start", u.post(), ""), http.StatusOK)
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/stop", u.post(), "{}"), http.StatusOK)
	wantStatus(t, u.do(t, "POST", "/api/vms/old/delete", u.post(), "{}"), http.StatusOK)
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/delete", u.post(), `{"force":true}`), http.StatusOK)
	want := []string{"start dev", "stop dev", "delete old", "delete --force dev"}
	if got := u.fake.recorded(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("service calls %v, want %v", got, want)
	}
	// Actions are POST only; a GET (say, from an <img> tag) does nothing.
	resp := u.do(t, "GET", "/api/vms/dev/stop", u.bearer(), "")
	wantStatus(t, resp, http.StatusMethodNotAllowed)
	wantStatus(t, u.do(t, "DELETE", "/api/vms/dev", u.bearer(), ""), http.StatusMethodNotAllowed)
	if n := len(u.fake.recorded()); n != len(want) {
		t.Fatalf("GET reached the service: %v", u.fake.recorded())
	}
	// Service errors keep their kind.
	resp = u.do(t, "POST", "/api/vms/missing/start", u.post(), "")
	wantStatus(t, resp, http.StatusNotFound)
	var ev errorView
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil || ev.Error.Kind != api.KindNotFound || !strings.Contains(ev.Error.Message, "missing") {
		t.Fatalf("error body %+v (%v)", ev, err)
	}
	wantStatus(t, u.do(t, "POST", "/api/vms/dev/delete", u.post(), "not json"), http.StatusBadRequest)
}

func TestStateJSON(t *testing.T) {
	u := newTestUI(t)
	resp := u.do(t, "GET", "/api/state", u.bearer(), "")
	wantStatus(t, resp, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"generated_at", "vms", "images", "ops"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("state lacks %q", k)
		}
	}
	var vms []map[string]any
	if err := json.Unmarshal(raw["vms"], &vms); err != nil || len(vms) != 2 {
		t.Fatalf("vms %s (%v)", raw["vms"], err)
	}
	dev, old := vms[0], vms[1]
	if dev["name"] != "dev" || dev["ip"] != "172.30.0.2" || dev["cpus"] != float64(2) || dev["memory_mib"] != float64(1024) ||
		dev["vmm"] != "qemu" || dev["accel"] != "tcg" || dev["state"] != "running" {
		t.Errorf("dev %v", dev)
	}
	stats, _ := dev["stats"].(map[string]any)
	if stats["cpu_percent"] != 12.5 || stats["rss_bytes"] != float64(1<<20) {
		t.Errorf("dev stats %v", dev["stats"])
	}
	if _, ok := old["stats"]; ok || !strings.Contains(old["stats_error"].(string), "unavailable") {
		t.Errorf("old: a failed stats call must show as stats_error: %v", old)
	}
	var ops []api.Operation
	if err := json.Unmarshal(raw["ops"], &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1+recentFinished || ops[0].ID != "op-run" || ops[0].Progress != 0.5 {
		t.Errorf("ops: want the running op and %d recent ones, got %d: %+v", recentFinished, len(ops), ops)
	}
}

func TestSessionsAndLogTail(t *testing.T) {
	u := newTestUI(t)
	resp := u.do(t, "GET", "/api/vms/dev/sessions", u.bearer(), "")
	wantStatus(t, resp, http.StatusOK)
	var sl api.SessionListResult
	if err := json.NewDecoder(resp.Body).Decode(&sl); err != nil || len(sl.Sessions) != 1 || sl.Sessions[0].Name != "agent" {
		t.Fatalf("sessions %+v (%v)", sl, err)
	}
	resp = u.do(t, "GET", "/api/vms/dev/sessions/agent/logs?tail=10", u.bearer(), "")
	wantStatus(t, resp, http.StatusOK)
	var lv logView
	if err := json.NewDecoder(resp.Body).Decode(&lv); err != nil || lv.Data != "last line\n" || lv.Size != 110 {
		t.Fatalf("log %+v (%v)", lv, err)
	}
	wantStatus(t, u.do(t, "GET", "/api/vms/dev/sessions/agent/logs?tail=-1", u.bearer(), ""), http.StatusBadRequest)
}

func TestNonLoopbackRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7777", "[::]:7777", "192.168.1.10:7777", "localhost:7777", ":7777", "example.com:80"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded; want refusal", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:7777", "127.0.0.2:7777"} {
		if err := CheckLoopback(addr); err != nil {
			t.Errorf("CheckLoopback(%q): %v", addr, err)
		}
	}
}

func TestNewRejectsWeakToken(t *testing.T) {
	if _, err := New(&fakeService{}, Options{Token: "short"}); err == nil {
		t.Fatal("a short token was accepted")
	}
	a, _ := NewToken()
	b, _ := NewToken()
	if len(a) < minTokenLen || a == b {
		t.Fatalf("NewToken: %q %q", a, b)
	}
}

func TestStartWritesFilesAndStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := StartOptions{Addr: "127.0.0.1:0", TokenFile: filepath.Join(dir, "web-token"), AddrFile: filepath.Join(dir, "web-addr"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	addr, err := Start(ctx, &fakeService{}, o)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(o.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	tok, _ := os.ReadFile(o.TokenFile)
	got, _ := os.ReadFile(o.AddrFile)
	if strings.TrimSpace(string(got)) != addr.String() {
		t.Fatalf("addr file %q, listener %s", got, addr)
	}
	req, _ := http.NewRequest("GET", "http://"+addr.String()+"/api/vms/x/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// A second Start on the same port fails (and would be logged by the
	// daemon) instead of taking over.
	if _, err := Start(ctx, &fakeService{}, StartOptions{Addr: addr.String(), TokenFile: filepath.Join(dir, "t2"), AddrFile: filepath.Join(dir, "a2")}); err == nil {
		t.Fatal("second Start on a taken port succeeded")
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(o.AddrFile); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("addr file not removed after shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after ctx ended")
	}
}
