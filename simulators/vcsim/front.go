package main

// The front HTTP handler sits before the simulator's mux on the same listener:
//   /_fault      GET (rules + hit counters), POST (add rule or list of rules), DELETE (all, or ?id=N)
//   /_datastore  POST {"name","freeSpace"} overrides a datastore's free space, DELETE clears
//   /_cbt        GET CBT settings, POST {"page_limit": N, "drop_area": N|null} (cbt.go)
//   /_session    GET session counters, POST {"expire": "all"} (sessions.go)
//   /sdk         SOAP: method rules (task|soap|http|drop|delay|expire|hold|restart), ended sessions
//                refused, empty-200 repair
//   /guestFile   guest file transfers (guest.go), after path rules
//   otherwise    path rules (http|drop|drop_after|delay|expire|restart), e.g. datastore /folder
//                GETs; /folder with an expired session cookie gets 401

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Rule is one fault rule. Exactly one of Method (SOAP method name, e.g.
// "CreateSnapshot_Task") or Path (regexp on the URL path) is set.
type Rule struct {
	ID      int    `json:"id"`
	Method  string `json:"method,omitempty"`
	Path    string `json:"path,omitempty"`
	Verb    string `json:"verb,omitempty"` // optional HTTP method filter for path rules
	Kind    string `json:"kind"`           // task|soap|http|drop|drop_after|delay|expire|hold|restart
	Count   int    `json:"count"`          // first N matching calls; 0 = always
	Fault   string `json:"fault,omitempty"`
	Status  int    `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Ms      int    `json:"ms,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Hits    int    `json:"hits"`
	Active  bool   `json:"active"`

	re   *regexp.Regexp
	seen int64 // expire rules with bytes: bytes sent since the last firing
}

type faultSet struct {
	mu     sync.Mutex
	nextID int
	rules  []*Rule
	armed  map[types.ManagedObjectReference]types.BaseMethodFault
	free   map[string]int64 // datastore name -> overridden free space
}

var faults = &faultSet{
	armed: map[types.ManagedObjectReference]types.BaseMethodFault{},
	free:  map[string]int64{},
}

func (s *faultSet) add(r *Rule) error {
	switch r.Kind {
	case "task", "soap", "http", "drop", "drop_after", "delay", "expire", "hold", "restart", "crash":
	default:
		return fmt.Errorf("unknown kind %q (task|soap|http|drop|drop_after|delay|expire|hold|restart|crash)", r.Kind)
	}
	if r.Kind == "crash" && persist.dir == "" {
		return fmt.Errorf("crash needs a persistent inventory (-state-dir)")
	}
	if r.Kind == "restart" && r.Ms <= 0 {
		return fmt.Errorf("restart needs ms > 0 (how long the service is down)")
	}
	if (r.Method == "") == (r.Path == "") {
		return fmt.Errorf("a rule needs exactly one of method or path")
	}
	if r.Path != "" {
		re, err := regexp.Compile(r.Path)
		if err != nil {
			return fmt.Errorf("path: %s", err)
		}
		r.re = re
		if r.Kind == "task" || r.Kind == "soap" || r.Kind == "hold" {
			return fmt.Errorf("kind %s needs a SOAP method, not a path", r.Kind)
		}
	}
	if (r.Kind == "expire" || r.Kind == "restart" || r.Kind == "crash") && r.Path == "" && r.Bytes > 0 {
		return fmt.Errorf("expire after bytes applies to datastore (path) requests")
	}
	if r.Kind == "drop_after" && r.Path == "" {
		return fmt.Errorf("drop_after applies to datastore (path) requests")
	}
	if r.Kind == "task" || r.Kind == "soap" {
		if r.Fault == "" {
			r.Fault = "SystemError"
		}
		if _, ok := faultByName(r.Fault, ""); !ok {
			return fmt.Errorf("unknown vim25 fault %q", r.Fault)
		}
	}
	if r.Kind == "http" && r.Status == 0 {
		r.Status = http.StatusServiceUnavailable
	}
	if r.Count < 0 {
		return fmt.Errorf("count must be >= 0")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	r.ID = s.nextID
	r.Hits = 0
	s.rules = append(s.rules, r)
	return nil
}

// match returns a copy of the first active rule matching and counts the hit.
func (s *faultSet) match(method, path, verb string) *Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if r.Count > 0 && r.Hits >= r.Count {
			continue
		}
		if (r.Kind == "expire" || r.Kind == "restart" || r.Kind == "crash") && r.Bytes > 0 {
			continue // fired by the bytes it counts (countBytes), not by a request
		}
		if method != "" {
			if r.Method == "" || !strings.EqualFold(r.Method, method) {
				continue
			}
		} else {
			if r.re == nil || !r.re.MatchString(path) {
				continue
			}
			if r.Verb != "" && !strings.EqualFold(r.Verb, verb) {
				continue
			}
		}
		r.Hits++
		c := *r
		return &c
	}
	return nil
}

func (s *faultSet) arm(this types.ManagedObjectReference, f types.BaseMethodFault) {
	s.mu.Lock()
	s.armed[this] = f
	s.mu.Unlock()
}

func (s *faultSet) disarm(this types.ManagedObjectReference) {
	s.mu.Lock()
	delete(s.armed, this)
	s.mu.Unlock()
}

func (s *faultSet) takeArmed(entity types.ManagedObjectReference) types.BaseMethodFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.armed[entity]
	delete(s.armed, entity)
	return f
}

func (s *faultSet) snapshot() []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Rule{}
	for _, r := range s.rules {
		c := *r
		c.Active = r.Count == 0 || r.Hits < r.Count
		out = append(out, c)
	}
	return out
}

type front struct {
	next http.Handler
}

func newFront(next http.Handler) http.Handler { return &front{next: next} }

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/_") && serviceDown() {
		drop(w) // the service restarts: clients find nobody (control endpoints still answer)
		return
	}
	switch {
	case r.URL.Path == "/_fault":
		f.serveFault(w, r)
	case r.URL.Path == "/_datastore":
		f.serveDatastore(w, r)
	case r.URL.Path == "/_vmfs":
		serveVMFS(w, r)
	case r.URL.Path == "/_cbt":
		serveCBT(w, r)
	case r.URL.Path == "/_session":
		serveSession(w, r)
	case r.URL.Path == "/_state":
		serveState(w, r)
	case strings.HasPrefix(r.URL.Path, "/sdk"):
		f.serveSOAP(w, r)
	default:
		f.servePath(w, r)
	}
}

func (f *front) serveFault(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, 200, map[string]interface{}{"rules": faults.snapshot()})
	case http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		var rules []*Rule
		if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
			if err := json.Unmarshal(body, &rules); err != nil {
				writeJSON(w, 400, map[string]string{"error": err.Error()})
				return
			}
		} else {
			var one Rule
			if err := json.Unmarshal(body, &one); err != nil {
				writeJSON(w, 400, map[string]string{"error": err.Error()})
				return
			}
			rules = []*Rule{&one}
		}
		for _, rule := range rules {
			if err := faults.add(rule); err != nil {
				writeJSON(w, 400, map[string]string{"error": err.Error()})
				return
			}
		}
		writeJSON(w, 200, map[string]interface{}{"rules": faults.snapshot()})
	case http.MethodDelete:
		faults.mu.Lock()
		if id := r.URL.Query().Get("id"); id != "" {
			n, _ := strconv.Atoi(id)
			var keep []*Rule
			for _, rule := range faults.rules {
				if rule.ID != n {
					keep = append(keep, rule)
				}
			}
			faults.rules = keep
		} else {
			faults.rules = nil
		}
		faults.mu.Unlock()
		writeJSON(w, 200, map[string]interface{}{"rules": faults.snapshot()})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *front) serveDatastore(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		var req struct {
			Name      string `json:"name"`
			FreeSpace *int64 `json:"freeSpace"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.FreeSpace == nil {
			writeJSON(w, 400, map[string]string{"error": "want {\"name\": ..., \"freeSpace\": bytes}"})
			return
		}
		if req.Name == "" {
			req.Name = "LocalDS_0"
		}
		if datastoreByName(req.Name) == nil {
			writeJSON(w, 404, map[string]string{"error": "no datastore " + req.Name})
			return
		}
		faults.mu.Lock()
		faults.free[req.Name] = *req.FreeSpace
		faults.mu.Unlock()
		applyFreeSpace()
	case http.MethodDelete:
		name := r.URL.Query().Get("name")
		faults.mu.Lock()
		var cleared []string
		for n := range faults.free {
			if name == "" || n == name {
				cleared = append(cleared, n)
				delete(faults.free, n)
			}
		}
		faults.mu.Unlock()
		for _, n := range cleared {
			if ds := datastoreByName(n); ds != nil {
				simulator.Map.WithLock(ds, func() { ds.RefreshDatastore(&types.RefreshDatastore{This: ds.Self}) })
			}
		}
	case http.MethodGet:
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	out := map[string]interface{}{}
	for _, ds := range datastores() {
		faults.mu.Lock()
		_, over := faults.free[ds.Name]
		faults.mu.Unlock()
		out[ds.Name] = map[string]interface{}{
			"freeSpace": ds.Summary.FreeSpace, "capacity": ds.Summary.Capacity,
			"overridden": over, "url": ds.Info.GetDatastoreInfo().Url,
		}
	}
	writeJSON(w, 200, out)
}

// applyFreeSpace (re)imposes the free-space overrides; run after every SOAP call,
// since RefreshDatastore and disk creation recompute the value.
func applyFreeSpace() {
	faults.mu.Lock()
	free := map[string]int64{}
	for k, v := range faults.free {
		free[k] = v
	}
	faults.mu.Unlock()
	for name, v := range free {
		ds := datastoreByName(name)
		if ds == nil || (ds.Summary.FreeSpace == v && ds.Info.GetDatastoreInfo().FreeSpace == v) {
			continue
		}
		simulator.Map.WithLock(ds, func() {
			ds.Info.GetDatastoreInfo().FreeSpace = v
			simulator.Map.Update(ds, []types.PropertyChange{{Name: "summary.freeSpace", Val: v}})
		})
	}
}

var vmConfigName = regexp.MustCompile(`(?s)<config\b[^>]*>.*?<name>([^<]*)</name>`)

// duplicateVM is the name of the VM a CreateVM_Task request would create when the folder
// already holds a VM of that name: vCenter refuses it (DuplicateName), vcsim does not.
func duplicateVM(this types.ManagedObjectReference, body []byte) string {
	m := vmConfigName.FindSubmatch(body)
	folder, ok := simulator.Map.Get(this).(*simulator.Folder)
	if m == nil || !ok {
		return ""
	}
	name := html.UnescapeString(string(m[1]))
	var children []types.ManagedObjectReference
	simulator.Map.WithLock(folder, func() {
		children = append(children, folder.ChildEntity...)
	})
	if simulator.Map.FindByName(name, children) != nil {
		return name
	}
	return ""
}

var thisType = regexp.MustCompile(`(<_this\b[^>]*\btype=")VirtualMachine(")`)

// soapMethod finds the method name and _this of a SOAP request without decoding it all.
func soapMethod(body []byte) (string, types.ManagedObjectReference) {
	var this types.ManagedObjectReference
	d := xml.NewDecoder(bytes.NewReader(body))
	inBody, method := false, ""
	for {
		tok, err := d.Token()
		if err != nil {
			return method, this
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch {
			case !inBody && se.Name.Local == "Body":
				inBody = true
			case inBody && method == "":
				method = se.Name.Local
			case method != "" && se.Name.Local == "_this":
				for _, a := range se.Attr {
					if a.Name.Local == "type" {
						this.Type = a.Value
					}
				}
				var v string
				_ = d.DecodeElement(&v, &se)
				this.Value = strings.TrimSpace(v)
				return method, this
			}
		}
	}
}

func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// soapFaultXML is the envelope vcsim itself writes for faults.
func soapFaultXML(name, message string) []byte {
	if message == "" {
		message = "dpflow-vcsim injected " + name
	}
	var msg bytes.Buffer
	_ = xml.EscapeText(&msg, []byte(message))
	return []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		msg.String(), name, name, name))
}

type bufferedWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
	real   http.ResponseWriter
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = 200
	}
	return b.buf.Write(p)
}

func (f *front) serveSOAP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		f.next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	method, this := soapMethod(body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	armed, held := false, false
	if rule := faults.match(method, "", r.Method); rule != nil {
		switch rule.Kind {
		case "delay":
			time.Sleep(time.Duration(rule.Ms) * time.Millisecond)
		case "http":
			http.Error(w, rule.Message, rule.Status)
			return
		case "drop":
			drop(w)
			return
		case "soap":
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(soapFaultXML(strings.TrimPrefix(rule.Fault, "vim.fault."), rule.Message))
			return
		case "task":
			fault, _ := faultByName(rule.Fault, rule.Message)
			faults.arm(this, fault)
			armed = true
		case "expire":
			sessions.expireAll()
		case "hold":
			armHold(this, rule.Ms)
			held = true
		case "restart":
			restartService(time.Duration(rule.Ms) * time.Millisecond)
			drop(w)
			return
		case "crash":
			crashRestart(rule.Ms)
		}
	}
	if sessions.refused(r, true) {
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(soapFaultXML("NotAuthenticated", "The session is not authenticated."))
		return
	}
	if method == "CreateVM_Task" {
		if name := duplicateVM(this, body); name != "" {
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(soapFaultXML("DuplicateName", "The name '"+name+"' already exists."))
			return
		}
	}

	if method == "QueryChangedDiskAreas" && this.Type == "VirtualMachine" && cbtRoute(this) {
		// vcsim has no such method on its VM type: route the call to our handler
		// (cbt.go), keeping vcsim's session check, decoding and encoding.
		body = thisType.ReplaceAll(body, []byte("${1}"+cbtType+"${2}"))
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}

	bw := &bufferedWriter{header: w.Header(), real: w}
	f.next.ServeHTTP(bw, r)
	if mutating(method) { // kept before the client hears of it, as vCenter's database
		saveState()
	}
	if armed {
		faults.disarm(this)
	}
	if held {
		disarmHold(this)
	}
	sessions.noteLogin(w.Header())
	applyFreeSpace()
	if bw.status == 0 {
		bw.status = 200
	}
	if bw.status == http.StatusOK && bw.buf.Len() == 0 && method != "" {
		// vcsim answers some methods (RefreshDatastore) with an empty 200, which
		// pyVmomi cannot parse: answer the empty response vCenter would.
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		fmt.Fprintf(&bw.buf, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><%sResponse xmlns="urn:vim25"></%sResponse></soapenv:Body></soapenv:Envelope>`, method, method)
	}
	w.Header().Set("Content-Length", strconv.Itoa(bw.buf.Len()))
	w.WriteHeader(bw.status)
	_, _ = w.Write(bw.buf.Bytes())
}

// cutWriter passes through limit bytes of body, then flushes and closes the connection.
type cutWriter struct {
	http.ResponseWriter
	limit, written int64
	cut            bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.cut {
		return 0, io.ErrClosedPipe
	}
	if c.written+int64(len(p)) <= c.limit {
		n, err := c.ResponseWriter.Write(p)
		c.written += int64(n)
		return n, err
	}
	n, _ := c.ResponseWriter.Write(p[:c.limit-c.written])
	c.written += int64(n)
	if fl, ok := c.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	c.cut = true
	drop(c.ResponseWriter)
	return n, io.ErrClosedPipe
}

func (f *front) servePath(w http.ResponseWriter, r *http.Request) {
	if rule := faults.match("", r.URL.Path, r.Method); rule != nil {
		switch rule.Kind {
		case "delay":
			time.Sleep(time.Duration(rule.Ms) * time.Millisecond)
		case "http":
			http.Error(w, rule.Message, rule.Status)
			return
		case "drop":
			drop(w)
			return
		case "drop_after":
			f.next.ServeHTTP(&cutWriter{ResponseWriter: w, limit: rule.Bytes}, r)
			return
		case "expire":
			sessions.expireAll()
		case "restart":
			restartService(time.Duration(rule.Ms) * time.Millisecond)
			drop(w)
			return
		case "crash":
			crashRestart(rule.Ms)
		}
	}
	if strings.HasPrefix(r.URL.Path, "/folder") && sessions.refused(r, false) {
		http.Error(w, "session expired: log in again", http.StatusUnauthorized)
		return
	}
	if ids := faults.byteRules(r.URL.Path, r.Method); len(ids) > 0 {
		w = &countingWriter{ResponseWriter: w, ids: ids}
	}
	if r.URL.Path == guestFilePath {
		serveGuestFile(w, r)
		return
	}
	f.next.ServeHTTP(w, r)
}
