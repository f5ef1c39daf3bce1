package main

// Session expiry on demand. vCenter ends idle or long sessions (a backup job that runs
// past the session's lifetime sees NotAuthenticated on its next SOAP call and 401 on
// datastore HTTP); vcsim's own idle timer is process-wide and cannot be driven from a
// test. The front handler therefore tracks every session key it hands out (the
// Set-Cookie of a Login answer) and refuses keys it has expired:
//   - SOAP with an expired cookie: the NotAuthenticated fault vCenter sends;
//   - datastore /folder requests with an expired cookie: 401 Unauthorized.
// A request without any session cookie is not refused on /folder (vcsim checks no
// authentication there), so clients that never logged in keep working.
//
// A service restart (fault kind "restart", "ms": downtime) ends every session and drops
// every client request for ms, as vCenter's service does while it restarts; the process,
// its inventory and the datastore files stay. A restart of the process itself is the
// fault kind "crash" (restart.go), which needs the persistent inventory (persist.go).
//
// Triggers: POST /_session {"expire": "all"} now; a fault rule of kind "expire" on a
// SOAP method (the call meets an expired session); a rule of kind "expire" on a path
// with "bytes": N, which expires every session once N more bytes of matching responses
// were sent (the transfer in flight completes, as on vCenter, which checks the
// session when a request starts); count = how many times (0 = every N bytes).

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/soap"
)

var outage = struct {
	sync.Mutex
	until    time.Time
	restarts int
}{}

// restartService ends every session and refuses clients for d.
func restartService(d time.Duration) {
	sessions.expireAll()
	outage.Lock()
	outage.until = time.Now().Add(d)
	outage.restarts++
	outage.Unlock()
	logf("service restart: down for %s", d)
}

// serviceDown says whether clients are refused now (a restart is under way).
func serviceDown() bool {
	outage.Lock()
	defer outage.Unlock()
	return time.Now().Before(outage.until)
}

type sessionTracker struct {
	mu           sync.Mutex
	live         map[string]bool
	expired      map[string]bool
	logins       int
	expiries     int
	refusedSOAP  int
	refusedHTTP  int
	expiredTotal int
}

var sessions = &sessionTracker{live: map[string]bool{}, expired: map[string]bool{}}

// noteLogin records the session key of a Set-Cookie header written by the simulator.
func (t *sessionTracker) noteLogin(h http.Header) {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name != soap.SessionCookieName || c.Value == "" {
			continue
		}
		t.mu.Lock()
		if !t.live[c.Value] && !t.expired[c.Value] {
			t.live[c.Value] = true
			t.logins++
		}
		t.mu.Unlock()
	}
}

// expireAll ends every live session now.
func (t *sessionTracker) expireAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.live)
	for k := range t.live {
		t.expired[k] = true
		delete(t.live, k)
	}
	t.expiries++
	t.expiredTotal += n
	logf("expired %d session(s)", n)
	return n
}

// refused says whether r carries an expired session cookie, counting the refusal.
func (t *sessionTracker) refused(r *http.Request, soapCall bool) bool {
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.expired[strings.Trim(c.Value, `"`)] {
		return false
	}
	if soapCall {
		t.refusedSOAP++
	} else {
		t.refusedHTTP++
	}
	return true
}

func (t *sessionTracker) state() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	outage.Lock()
	restarts := outage.restarts
	outage.Unlock()
	return map[string]int{
		"logins": t.logins, "live": len(t.live), "expired": t.expiredTotal,
		"expiries": t.expiries, "refused_soap": t.refusedSOAP, "refused_http": t.refusedHTTP,
		"restarts": restarts,
	}
}

func serveSession(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var req struct {
			Expire string `json:"expire"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Expire != "all" {
			writeJSON(w, 400, map[string]string{"error": `want {"expire": "all"}`})
			return
		}
		sessions.expireAll()
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, 200, sessions.state())
}

// byteRules returns the IDs of active "expire" rules that count bytes on this path.
func (s *faultSet) byteRules(path, verb string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []int
	for _, r := range s.rules {
		if (r.Kind != "expire" && r.Kind != "restart" && r.Kind != "crash") || r.re == nil || r.Bytes <= 0 || (r.Count > 0 && r.Hits >= r.Count) {
			continue
		}
		if r.re.MatchString(path) && (r.Verb == "" || strings.EqualFold(r.Verb, verb)) {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// countBytes adds n sent bytes to the rules ids; every rule whose budget is spent
// fires (a hit) and all sessions expire.
func (s *faultSet) countBytes(ids []int, n int64) {
	expire, restart, crash := false, time.Duration(0), -1
	s.mu.Lock()
	for _, r := range s.rules {
		for _, id := range ids {
			if r.ID != id || (r.Count > 0 && r.Hits >= r.Count) {
				continue
			}
			r.seen += n
			if r.seen >= r.Bytes {
				r.seen = 0
				r.Hits++
				if r.Kind == "crash" {
					crash = r.Ms
				} else if r.Kind == "restart" {
					restart = time.Duration(r.Ms) * time.Millisecond
				} else {
					expire = true
				}
			}
		}
	}
	s.mu.Unlock()
	if crash >= 0 {
		crashRestart(crash)
	}
	if restart > 0 {
		restartService(restart)
	} else if expire {
		sessions.expireAll()
	}
}

// countingWriter reports the body bytes it passes on to byte-counting expire rules.
type countingWriter struct {
	http.ResponseWriter
	ids []int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if serviceDown() {
		panic(http.ErrAbortHandler) // a restart cuts the transfers in flight
	}
	n, err := c.ResponseWriter.Write(p)
	if n > 0 {
		faults.countBytes(c.ids, int64(n))
	}
	return n, err
}

func (c *countingWriter) Flush() {
	if fl, ok := c.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}
