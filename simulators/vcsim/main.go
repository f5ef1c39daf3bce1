// dpflow-vcsim: govmomi's vSphere simulator (0.24.2) made fit for backup tests.
//
// On top of stock vcsim it adds: disk content in sparse -flat.vmdk files, point-in-time
// snapshots (delta disks, consolidation on remove), changed block tracking with
// QueryChangedDiskAreas (/_cbt to page and corrupt answers), fault injection at run time
// (/_fault), a datastore free-space override (/_datastore), guest file operations on
// the VM's ext4 disk image (guest.go), a guest heartbeat for VMs that boot from such a
// disk (heartbeat.go), NFS datastores of a local export (nas.go), Storage vMotion that
// copies the disks (relocate.go), an inventory kept across restarts of the process
// (-state-dir, persist.go; fault kind "crash", restart.go), and workarounds for three
// server bugs that break pyVmomi >= 8 (see /work/shared/notes/vcsim.md).
//
// Output on stdout, one KEY=VALUE per line, READY last:
//
//	DPFLOW_VCSIM_URL=https://127.0.0.1:PORT/sdk
//	DPFLOW_VCSIM_DATASTORE=LocalDS_0=/tmp/.../govcsim-DC0-LocalDS_0-123
//	DPFLOW_VCSIM_READY=1
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	addr := flag.String("l", "127.0.0.1:8989", "listen address (port 0 picks a free port)")
	useTLS := flag.Bool("tls", true, "serve HTTPS")
	certFile := flag.String("tlscert", "", "PEM server certificate (default: vcsim's built-in RSA-1024 one)")
	keyFile := flag.String("tlskey", "", "PEM server private key")
	username := flag.String("username", "", "login user name (empty: any non-empty user/password pass)")
	password := flag.String("password", "", "login password")
	faultsFile := flag.String("faults", "", "JSON file with fault rules applied from start-up (list of rules)")
	dc := flag.Int("dc", 1, "number of datacenters")
	cluster := flag.Int("cluster", 1, "clusters per datacenter")
	host := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	vms := flag.Int("vm", 2, "VMs per resource pool")
	ds := flag.Int("ds", 1, "datastores per datacenter")
	pool := flag.Int("pool", 1, "resource pools per compute resource")
	trace := flag.Bool("trace", false, "trace SOAP to stderr")
	cbtDir := flag.String("cbt-dir", "", "directory for CBT block hashes (default: a temporary directory, removed at exit)")
	cbtPageLimit := flag.Int("cbt-page-limit", 64, "changed areas per QueryChangedDiskAreas answer")
	guestUser := flag.String("guest-user", "root", "guest operations: the guest's user name")
	guestPassword := flag.String("guest-password", "dpflow-guest", "guest operations: the guest user's password")
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of a vCenter")
	sanURL := flag.String("san-url", "", "the site array's data path (https://host:port): the hosts' SAN")
	sanHost := flag.String("san-host", "", "the array's name for this simulator's hosts")
	sanUser := flag.String("san-user", "admin", "SAN data path user (password from $DPFLOW_VCSIM_SAN_PASSWORD)")
	sanCA := flag.String("san-ca", "", "PEM CA that signed the array's certificate")
	stateDir := flag.String("state-dir", "", "keep the inventory in this directory and restore it on start (see persist.go)")
	generation := flag.Int("generation", 0, "how many times this simulator was restarted by a crash fault (set by the restart itself)")
	startDelay := flag.Int("start-delay", 0, "milliseconds to wait before listening (a restart's downtime)")
	flag.Parse()

	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("dpflow-vcsim: ")

	if *faultsFile != "" {
		data, err := os.ReadFile(*faultsFile)
		if err != nil {
			log.Fatalf("reading -faults: %s", err)
		}
		var rules []*Rule
		if err := json.Unmarshal(data, &rules); err != nil {
			log.Fatalf("parsing -faults %s: %s", *faultsFile, err)
		}
		for _, r := range rules {
			if err := faults.add(r); err != nil {
				log.Fatalf("-faults %s: %s", *faultsFile, err)
			}
		}
	}

	if *cbtPageLimit < 1 {
		log.Fatalf("-cbt-page-limit must be >= 1")
	}
	cbt.pageLimit = *cbtPageLimit
	removeCbtDir := false
	if *cbtDir == "" {
		dir, err := os.MkdirTemp("", "dpflow-vcsim-cbt-")
		if err != nil {
			log.Fatalf("CBT directory: %s", err)
		}
		*cbtDir, removeCbtDir = dir, true
	} else if err := os.MkdirAll(*cbtDir, 0700); err != nil {
		log.Fatalf("-cbt-dir: %s", err)
	}
	cbt.dir = *cbtDir

	model := simulator.VPX()
	if *esx { // a standalone ESX host: ha-datacenter, one host, no vCenter inventory
		model = simulator.ESX()
	} else {
		model.Datacenter = *dc
		model.Cluster = *cluster
		model.ClusterHost = *host
		model.Host = *standalone
	}
	model.Machine = *vms
	model.Datastore = *ds
	model.Pool = *pool
	if *trace {
		simulator.Trace = true
	}

	if err := model.Create(); err != nil {
		log.Fatalf("creating model: %s", err)
	}

	if *esx {
		dropStaleDatastores()
	}
	restored := false
	if *stateDir != "" {
		if err := os.MkdirAll(*stateDir, 0700); err != nil {
			log.Fatalf("-state-dir: %s", err)
		}
		var err error
		if restored, err = restoreState(*stateDir); err != nil {
			log.Fatalf("restoring the inventory from %s: %s", *stateDir, err)
		}
		persist.dir = *stateDir
		restart.generation = *generation
	}

	listen := &url.URL{Host: *addr}
	if *username != "" || *password != "" {
		listen.User = url.UserPassword(*username, *password)
	}
	model.Service.Listen = listen

	if *useTLS {
		cfg := &tls.Config{}
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatalf("loading TLS key pair: %s", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		model.Service.TLS = cfg
	}

	installPropertyCollectorFix()
	installTaskHook()
	guestCfg.user, guestCfg.password = *guestUser, *guestPassword
	if !*useTLS {
		guestCfg.scheme = "http"
	}
	installGuestFileManager()
	installVMFS()
	if *sanURL != "" {
		if err := configureSAN(*sanURL, *sanHost, *sanUser, os.Getenv("DPFLOW_VCSIM_SAN_PASSWORD"), *sanCA, os.TempDir()); err != nil {
			log.Fatalf("-san-ca: %s", err)
		}
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		if restored { // their files are there (delta descriptors included)
			break
		}
		if fault := ensureDiskFiles(obj.(*simulator.VirtualMachine)); fault != nil {
			log.Printf("sizing disks of %s: %#v", obj.Reference(), fault)
		}
	}
	saveState()
	if *startDelay > 0 {
		time.Sleep(time.Duration(*startDelay) * time.Millisecond)
	}

	server := model.Service.NewServer()
	// Our front handler goes before the simulator's mux. The server is started but
	// its URL not yet published, so no request can race with this assignment.
	server.Config.Handler = newFront(server.Config.Handler)

	u := *server.URL
	u.User = nil
	restart.addr = u.Host
	fmt.Printf("DPFLOW_VCSIM_URL=%s\n", u.String())
	for _, d := range datastores() {
		fmt.Printf("DPFLOW_VCSIM_DATASTORE=%s=%s\n", d.Name, d.Info.GetDatastoreInfo().Url)
	}
	fmt.Printf("DPFLOW_VCSIM_READY=1\n")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if persist.dir != "" { // the inventory stays for the next start, with its datastores
		saveState()
		os.Exit(0)
	}
	// Do not wait for open connections (a WaitForUpdates could hang forever):
	// remove the datastore directories and leave.
	model.Remove()
	if removeCbtDir {
		_ = os.RemoveAll(*cbtDir)
	}
	os.Exit(0)
}

// datastores lists the simulator's datastores sorted by name.
func datastores() []*simulator.Datastore {
	var out []*simulator.Datastore
	for _, e := range simulator.Map.All("Datastore") {
		out = append(out, e.(*simulator.Datastore))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func datastoreByName(name string) *simulator.Datastore {
	for _, d := range datastores() {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// dropStaleDatastores removes the ESX model's built-in datastore reference, which names
// no object (only the datastore the model creates exists).
func dropStaleDatastores() {
	live := func(refs []types.ManagedObjectReference) []types.ManagedObjectReference {
		var out []types.ManagedObjectReference
		for _, r := range refs {
			if simulator.Map.Get(r) != nil {
				out = append(out, r)
			}
		}
		return out
	}
	for _, obj := range simulator.Map.All("Datacenter") {
		dc := obj.(*simulator.Datacenter)
		dc.Datastore = live(dc.Datastore)
	}
	for _, obj := range simulator.Map.All("HostSystem") {
		h := obj.(*simulator.HostSystem)
		h.Datastore = live(h.Datastore)
	}
	for _, obj := range simulator.Map.All("ComputeResource") {
		if cr, ok := obj.(*mo.ComputeResource); ok {
			cr.Datastore = live(cr.Datastore)
		}
	}
}
