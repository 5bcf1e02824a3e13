package web

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"strings"
)

const (
	// cookieName holds the access token once the browser has opened the
	// link `banger web` printed.
	cookieName = "banger_web"
	// csrfHeader carries the page's CSRF token on every POST.
	csrfHeader = "X-CSRF-Token"
)

// hostsFor lists the Host header values a request to listenAddr may carry:
// the literal address and localhost on the same port. Anything else is a
// name an attacker's DNS could point at 127.0.0.1 (DNS rebinding).
func hostsFor(listenAddr string) map[string]bool {
	hosts := map[string]bool{listenAddr: true}
	if _, port, err := net.SplitHostPort(listenAddr); err == nil {
		hosts[net.JoinHostPort("127.0.0.1", port)] = true
		hosts[net.JoinHostPort("localhost", port)] = true
	}
	return hosts
}

// guard runs every check before next: Host, method, token, then for a
// POST the CSRF token and the origin. It also sets headers that keep the
// page out of frames and caches.
func (s *Server) guard(hosts map[string]bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")

		if !hosts[strings.ToLower(r.Host)] {
			http.Error(w, "forbidden: unexpected Host header; open the UI through the URL `banger web` prints", http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodPost:
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// The link from `banger web` carries the token once; trade it for
		// a cookie and redirect so it leaves the address bar and history.
		if q := r.URL.Query(); q.Has("token") && r.Method == http.MethodGet {
			if !s.tokenOK(q.Get("token")) {
				s.unauthorized(w, r)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.token, Path: "/",
				HttpOnly: true, SameSite: http.SameSiteStrictMode})
			q.Del("token")
			u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		if !s.authenticated(r) {
			s.unauthorized(w, r)
			return
		}
		if r.Method == http.MethodPost {
			if !s.csrfOK(r.Header.Get(csrfHeader)) {
				http.Error(w, "forbidden: missing or wrong CSRF token; reload the page", http.StatusForbidden)
				return
			}
			if !sameOrigin(r) {
				http.Error(w, "forbidden: cross-origin request", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) tokenOK(got string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

func (s *Server) csrfOK(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

func (s *Server) authenticated(r *http.Request) bool {
	if auth := r.Header.Get("Authorization"); auth != "" {
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		return ok && s.tokenOK(tok)
	}
	c, err := r.Cookie(cookieName)
	return err == nil && s.tokenOK(c.Value)
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	// Path only: a query may hold a (wrong) token, which stays out of logs.
	s.log.Debug("web UI: unauthenticated request", "method", r.Method, "path", r.URL.Path)
	w.Header().Set("WWW-Authenticate", `Bearer realm="banger"`)
	http.Error(w, "unauthorized: run `banger web` on this machine and open the link it prints (the token changes when the daemon restarts)", http.StatusUnauthorized)
}

// sameOrigin requires the Origin header, or failing that the Referer, to
// name this very host over http. A request with neither is refused:
// browsers send Origin on every POST, so only a forged request lacks both.
func sameOrigin(r *http.Request) bool {
	want := "http://" + strings.ToLower(r.Host)
	if o := r.Header.Get("Origin"); o != "" {
		return strings.ToLower(o) == want
	}
	ref, err := url.Parse(r.Header.Get("Referer"))
	if err != nil || ref.Host == "" {
		return false
	}
	return strings.ToLower(ref.Scheme+"://"+ref.Host) == want
}
