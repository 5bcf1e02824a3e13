// Package web is banger's experimental local web UI: one dashboard page
// of VMs, images, running operations and guest sessions, with live
// metrics and start / stop / delete buttons.
//
// It holds no logic of its own: every read and every action goes through
// api.Service, the same surface the CLI uses over the socket. It is for
// one user on one machine and is deliberately narrow about who may talk
// to it: it binds to loopback addresses only, every request needs the
// per-daemon token (a cookie, or an Authorization: Bearer header), the
// Host header must name the listener (DNS-rebinding protection), and a
// POST additionally needs the CSRF token embedded in the page and a
// same-origin Origin or Referer. It is not hardened beyond that and its
// URLs and JSON are not a stable interface.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Options configure a Server.
type Options struct {
	// Token is the secret every request must present. Required; see NewToken.
	Token string
	// Version is shown in the page header.
	Version string
	Logger  *slog.Logger
}

// Server serves the web UI for one daemon.
type Server struct {
	svc     api.Service
	token   string
	csrf    string
	version string
	log     *slog.Logger
}

// minTokenLen keeps a caller from configuring a guessable token.
const minTokenLen = 32

// New returns a server that reads and acts through svc.
func New(svc api.Service, o Options) (*Server, error) {
	if svc == nil {
		return nil, errors.New("web: no service")
	}
	if len(o.Token) < minTokenLen {
		return nil, fmt.Errorf("web: token must be at least %d characters (use web.NewToken)", minTokenLen)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	// The CSRF token is derived from the access token, so it is stable
	// for the daemon's life and needs no server-side session table; a
	// page from another origin can read neither.
	mac := hmac.New(sha256.New, []byte(o.Token))
	mac.Write([]byte("banger web csrf"))
	return &Server{svc: svc, token: o.Token, csrf: hex.EncodeToString(mac.Sum(nil)),
		version: o.Version, log: log}, nil
}

// NewToken returns a fresh random access token.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("web token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// CheckLoopback refuses any address that is not a literal loopback
// IP:port. Host names (even "localhost") are refused because what they
// resolve to is not under banger's control.
func CheckLoopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("web address %q: want a loopback IP:port such as 127.0.0.1:7777", addr)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("web address %q: the web UI only listens on loopback addresses (127.0.0.0/8, ::1)", addr)
	}
	return nil
}

// Listen opens a TCP listener on a loopback address.
func Listen(addr string) (net.Listener, error) {
	if err := CheckLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("web UI: listen on %s: %w (is another daemon using the port? set web_addr or --web-addr, or --no-web)", addr, err)
	}
	return ln, nil
}

// Handler returns the UI's handler for requests addressed to listenAddr
// (the listener's actual IP:port), which is what the Host check allows.
func (s *Server) Handler(listenAddr string) http.Handler {
	return s.guard(hostsFor(listenAddr), s.routes())
}

// Serve serves on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := CheckLoopback(ln.Addr().String()); err != nil {
		ln.Close()
		return err
	}
	hs := &http.Server{
		Handler:           s.Handler(ln.Addr().String()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Requests carry tokens in cookies and headers: the standard
		// library's own error log must not go to the daemon log verbatim.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context {
			return ctx
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	err := hs.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// StartOptions are what the daemon passes to Start.
type StartOptions struct {
	Addr    string
	Version string
	// TokenFile receives a fresh token (mode 0600); AddrFile the address
	// actually bound. `banger web` reads both. AddrFile is removed when
	// serving stops.
	TokenFile string
	AddrFile  string
	Logger    *slog.Logger
}

// Start generates a token, binds the listener and serves in a goroutine
// until ctx ends. It returns the bound address. An error (the port is
// taken, say) means nothing is served; the daemon logs it and goes on.
func Start(ctx context.Context, svc api.Service, o StartOptions) (net.Addr, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	token, err := NewToken()
	if err != nil {
		return nil, err
	}
	s, err := New(svc, Options{Token: token, Version: o.Version, Logger: log})
	if err != nil {
		return nil, err
	}
	ln, err := Listen(o.Addr)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(o.TokenFile, token+"\n", 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("web UI: write token: %w", err)
	}
	addr := ln.Addr()
	if err := writeFileAtomic(o.AddrFile, addr.String()+"\n", 0o644); err != nil {
		ln.Close()
		return nil, fmt.Errorf("web UI: write address: %w", err)
	}
	go func() {
		defer os.Remove(o.AddrFile)
		if err := s.Serve(ctx, ln); err != nil {
			log.Warn("web UI stopped", "err", err)
		}
	}()
	log.Info("web UI (experimental) listening; run `banger web` for the link", "addr", addr.String())
	return addr, nil
}

// writeFileAtomic writes through a temporary file so a reader never sees
// a half-written token, and a new token never inherits an old file's mode.
func writeFileAtomic(path, data string, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
