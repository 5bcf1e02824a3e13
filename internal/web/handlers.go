package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

//go:embed assets
var assets embed.FS

var pageTmpl = template.Must(template.ParseFS(assets, "assets/index.html"))

// Bounds that keep one slow VM or a large log from stalling the page.
const (
	statsTimeout     = 5 * time.Second
	statsParallelism = 8
	// actionTimeout covers a graceful stop (default 30 s) and its forced
	// fallback.
	actionTimeout   = 3 * time.Minute
	defaultLogTail  = 16 << 10
	maxLogTail      = 256 << 10
	recentFinished  = 5
	maxRequestBytes = 4 << 10
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /api/state", s.state)
	mux.HandleFunc("GET /api/vms/{vm}/sessions", s.sessions)
	mux.HandleFunc("GET /api/vms/{vm}/sessions/{session}/logs", s.sessionLogs)
	mux.HandleFunc("POST /api/vms/{vm}/start", s.start)
	mux.HandleFunc("POST /api/vms/{vm}/stop", s.stop)
	mux.HandleFunc("POST /api/vms/{vm}/delete", s.delete)
	return mux
}

// page renders the dashboard shell; app.js fills it from /api/state.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	data := struct {
		CSRF     string
		Version  string
		Backends []api.Backend
	}{CSRF: s.csrf, Version: s.version}
	if v, err := s.svc.DaemonVersion(r.Context()); err == nil {
		data.Backends = v.Backends
		if data.Version == "" {
			data.Version = v.Version
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, data); err != nil {
		s.log.Warn("web UI: render page", "err", err)
	}
}

// stateView is the JSON the page polls. Its shape is not a stable API.
type stateView struct {
	GeneratedAt time.Time       `json:"generated_at"`
	VMs         []vmView        `json:"vms"`
	Images      []api.Image     `json:"images"`
	Ops         []api.Operation `json:"ops"`
	// Errors are partial failures: the rest of the view is still valid.
	Errors []string `json:"errors,omitempty"`
}

// vmView is a VM with its live metrics.
type vmView struct {
	api.VM
	Stats      *api.VMStats `json:"stats,omitempty"`
	StatsError string       `json:"stats_error,omitempty"`
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	out := stateView{GeneratedAt: time.Now().UTC(), VMs: []vmView{}, Images: []api.Image{}, Ops: []api.Operation{}}
	vms, err := s.svc.VMList(ctx, api.VMListParams{})
	if err != nil {
		writeError(w, err)
		return
	}
	out.VMs = make([]vmView, len(vms.VMs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, statsParallelism)
	for i, v := range vms.VMs {
		out.VMs[i].VM = v
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, statsTimeout)
			defer cancel()
			st, err := s.svc.VMStats(sctx, api.VMRef{VM: v.Name})
			if err != nil {
				out.VMs[i].StatsError = err.Error()
				return
			}
			out.VMs[i].Stats = &st
		}()
	}
	if imgs, err := s.svc.ImageList(ctx); err != nil {
		out.Errors = append(out.Errors, "images: "+err.Error())
	} else if imgs.Images != nil {
		out.Images = imgs.Images
	}
	if ops, err := s.svc.OpList(ctx, api.OpListParams{}); err != nil {
		out.Errors = append(out.Errors, "operations: "+err.Error())
	} else {
		finished := 0
		for _, op := range ops.Ops {
			if !op.State.Terminal() {
				out.Ops = append(out.Ops, op)
			} else if finished < recentFinished {
				out.Ops = append(out.Ops, op)
				finished++
			}
		}
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

// sessions lists a VM's guest sessions. It is fetched on demand, not in
// the poll: listing runs a script in the guest over SSH.
func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	res, err := s.svc.SessionList(r.Context(), api.VMRef{VM: r.PathValue("vm")})
	if err != nil {
		writeError(w, err)
		return
	}
	if res.Sessions == nil {
		res.Sessions = []api.Session{}
	}
	writeJSON(w, http.StatusOK, res)
}

// logView is the tail of a session log as text.
type logView struct {
	Data   string `json:"data"`
	Offset int64  `json:"offset"`
	Next   int64  `json:"next"`
	Size   int64  `json:"size"`
}

func (s *Server) sessionLogs(w http.ResponseWriter, r *http.Request) {
	tail := int64(defaultLogTail)
	if t := r.URL.Query().Get("tail"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, api.Errorf(api.KindInvalidInput, "tail %q: want a positive number of bytes", t))
			return
		}
		tail = min(n, maxLogTail)
	}
	res, err := s.svc.SessionLogs(r.Context(), api.SessionLogsParams{VM: r.PathValue("vm"),
		Session: r.PathValue("session"), Offset: -1, TailBytes: tail})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, logView{Data: string(res.Data), Offset: res.Offset, Next: res.Next, Size: res.Size})
}

// actionContext detaches an action from the request: a closed tab or a
// reload must not abort a stop or delete half-way.
func actionContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := actionContext(r)
	defer cancel()
	vm, err := s.svc.VMStart(ctx, api.VMRef{VM: r.PathValue("vm")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := actionContext(r)
	defer cancel()
	vm, err := s.svc.VMStop(ctx, api.VMStopParams{VM: r.PathValue("vm")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Force bool `json:"force"`
	}
	if err := readJSON(r, &body); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := actionContext(r)
	defer cancel()
	if _, err := s.svc.VMDelete(ctx, api.VMDeleteParams{VM: r.PathValue("vm"), Force: body.Force}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("vm")})
}

// readJSON decodes an optional small JSON body.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		return api.Errorf(api.KindInvalidInput, "read request body: %v", err)
	}
	if len(b) > maxRequestBytes {
		return api.Errorf(api.KindInvalidInput, "request body larger than %d bytes", maxRequestBytes)
	}
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return api.Errorf(api.KindInvalidInput, "request body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errorView is the JSON body of a failed request.
type errorView struct {
	Error struct {
		Kind    api.ErrorKind `json:"kind"`
		Message string        `json:"message"`
	} `json:"error"`
}

// writeError maps an api error kind onto an HTTP status.
func writeError(w http.ResponseWriter, err error) {
	var ev errorView
	ev.Error.Kind, ev.Error.Message = api.KindInternal, err.Error()
	var ae *api.Error
	if errors.As(err, &ae) {
		ev.Error.Kind = ae.Kind()
	}
	status := http.StatusInternalServerError
	switch ev.Error.Kind {
	case api.KindNotFound:
		status = http.StatusNotFound
	case api.KindConflict, api.KindBusy:
		status = http.StatusConflict
	case api.KindInvalidName, api.KindInvalidInput:
		status = http.StatusBadRequest
	case api.KindUnavailable:
		status = http.StatusServiceUnavailable
	case api.KindGuest:
		status = http.StatusBadGateway
	}
	writeJSON(w, status, ev)
}
