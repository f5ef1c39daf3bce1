package main

// A crash and restart of the simulator process (fault kind "crash", which needs
// -state-dir): the process replaces itself (execve) with a fresh start of the same
// binary, same flags, on the same address, so everything it held in memory is gone
// (sessions, tasks, property filters, run-time fault rules) and the new process has
// only what it saved (persist.go) — as a vCenter killed and started again. The state is
// not saved at the crash: the last save is what a task left. "ms" is the downtime: the
// new process waits that long before it listens (clients meet a refused connection).
// The number of such restarts is the new process's -generation, shown by GET /_state.

import (
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
)

var restart = struct {
	generation int
	addr       string // host:port the server listens on (for the restart)
}{}

// crashRestart never returns.
func crashRestart(downtimeMs int) {
	exe, err := os.Executable()
	if err != nil {
		log.Fatalf("crash: %s", err)
	}
	var args []string
	skip := false
	for _, a := range os.Args[1:] {
		name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
		if skip {
			skip = false
			continue
		}
		switch name {
		case "l", "generation", "start-delay":
			skip = !strings.Contains(a, "=")
			continue
		}
		args = append(args, a)
	}
	args = append([]string{os.Args[0], "-l", restart.addr,
		"-generation", strconv.Itoa(restart.generation + 1),
		"-start-delay", strconv.Itoa(downtimeMs)}, args...)
	logf("crash: restarting (generation %d, down %d ms)", restart.generation+1, downtimeMs)
	err = syscall.Exec(exe, args, os.Environ())
	log.Fatalf("crash: exec %s: %s", exe, err)
}

func serveState(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	persist.Lock()
	saves := persist.saves
	on := persist.dir != ""
	persist.Unlock()
	writeJSON(w, 200, map[string]interface{}{
		"persistent": on, "saves": saves, "generation": restart.generation,
	})
}
